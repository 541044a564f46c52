"""`omics score --predictions FILE`: every metric from stored answers (ours or the paper evaluator's format),
without a model and without torch."""

from __future__ import annotations

from argparse import Namespace


def run(args: Namespace) -> dict:
    from omics.evaluate.scoring import rescore
    from omics.io import ensure_writable

    if args.out is not None:
        ensure_writable(args.out / "metrics.json", args.overwrite)
    return rescore(args.predictions, args.train_data, args.out)
