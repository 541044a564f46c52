"""Stage 3 evaluate: as Stage 2, reading the answer inside <answer>…</answer> and reporting format compliance."""

from __future__ import annotations

import sys

from omics.cli import main

if __name__ == "__main__":
    sys.exit(main(["stage3", "evaluate", *sys.argv[1:]]))
