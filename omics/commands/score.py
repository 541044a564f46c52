"""`omics score --predictions FILE`: every metric from stored answers (ours or the paper evaluator's format),
without a model and without torch."""

from __future__ import annotations

from argparse import Namespace


def run(args: Namespace) -> dict:
    from omics.evaluate.html_report import write_report
    from omics.evaluate.report import ensure_writable
    from omics.evaluate.scoring import rescore

    if args.out is not None:
        ensure_writable(args.out / "metrics.json", args.overwrite)
    doc = rescore(args.predictions, args.train_data, args.out)
    if args.out is not None:
        write_report(args.out)
    return doc
