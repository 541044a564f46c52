"""`omics vocab build`: a sequence vocabulary learned on a Stage 1 file, written as a new base model folder."""

from __future__ import annotations

from argparse import Namespace


def run(args: Namespace) -> dict:
    from omics.io import ensure_writable
    from omics.runs import Run
    from omics.vocab.build import REPORT, build

    inputs = {"--data": args.data, "--base-model": args.base_model, "--eval-data": args.eval_data,
              "--stage2-data": args.stage2_data}
    with Run({"--out": (args.out, None)}, inputs) as run:
        ensure_writable(args.out / f"{REPORT}.json", args.overwrite)
        ensure_writable(args.out / "config.json", args.overwrite)
        run.begin(args.overwrite)
        return build(args.data, args.out, args.base_model, {"dna": args.dna, "protein": args.protein},
                     args.sample_mb, args.eval_data, args.stage2_data)
