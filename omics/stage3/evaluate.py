"""Stage 3 evaluate: as Stage 2, in reasoning mode (the reasoning prompt; the answer read inside <answer>…</answer>,
format compliance reported), direct mode (Stage 2's prompt and parsing: what replay kept) or both, side by side."""

from __future__ import annotations

import sys

from omics.cli import main

if __name__ == "__main__":
    sys.exit(main(["stage3", "evaluate", *sys.argv[1:]]))
