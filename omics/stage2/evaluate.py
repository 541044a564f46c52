"""Stage 2 evaluate: greedy answers to the test questions, parsed and scored (Mixed Score + paper metrics)."""

from __future__ import annotations

import sys
from argparse import Namespace

from omics.cli import main


def run(args: Namespace) -> dict:
    from omics.evaluate.run import evaluate_generation

    return evaluate_generation(2, args)


if __name__ == "__main__":
    sys.exit(main(["stage2", "evaluate", *sys.argv[1:]]))
