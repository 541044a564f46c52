"""`omics score --predictions FILE`: every metric from stored answers (ours or the paper evaluator's format),
without a model and without torch."""

from __future__ import annotations

from argparse import Namespace

from omics.errors import UserError


def run(args: Namespace) -> dict:
    from omics.evaluate.html_report import write_report
    from omics.evaluate.scoring import rescore
    from omics.io import ensure_writable
    from omics.model_card import read_card

    if args.out is not None:
        ensure_writable(args.out / "metrics.json", args.overwrite)
    if args.model is not None and args.train_data is None:  # the model's training label summary
        if not args.model.is_dir():
            raise UserError(f"--model {args.model}: no such folder; pass the model folder the answers came from")
        doc = rescore(args.predictions, None, args.out, train_summary=read_card(args.model).tasks or {})
    else:
        doc = rescore(args.predictions, args.train_data, args.out)
    if args.out is not None:
        write_report(args.out)
    return doc
