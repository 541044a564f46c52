"""Stage 3 evaluate: as Stage 2, reading the answer inside <answer>…</answer> and reporting format compliance."""

from __future__ import annotations

import sys
from argparse import Namespace

from omics.cli import main


def run(args: Namespace) -> dict:
    from omics.evaluate.run import evaluate_generation

    return evaluate_generation(3, args)


if __name__ == "__main__":
    sys.exit(main(["stage3", "evaluate", *sys.argv[1:]]))
