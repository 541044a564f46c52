"""Stage 2 evaluate: greedy answers to the test questions, parsed and scored (Mixed Score + paper metrics)."""

from __future__ import annotations

import sys

from omics.cli import main

if __name__ == "__main__":
    sys.exit(main(["stage2", "evaluate", *sys.argv[1:]]))
