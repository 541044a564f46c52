"""Stage 3 evaluate: as Stage 2, in reasoning mode (the reasoning prompt; the answer read inside <answer>…</answer>,
format compliance reported), direct mode (Stage 2's prompt and parsing: what replay kept) or both, side by side."""

from __future__ import annotations

import sys
from argparse import Namespace

from omics.cli import main

MODES = {"reasoning": ("reasoning",), "direct": ("direct",), "both": ("reasoning", "direct")}


def run(args: Namespace) -> dict:
    from omics.evaluate.report import compare_files, write_text
    from omics.evaluate.run import evaluate_generation

    docs = {mode: evaluate_generation(3, args, mode=mode, results_dir=mode_dir(args.metrics_dir, mode))
            for mode in MODES[args.mode]}
    if len(docs) > 1:  # what reasoning adds or costs, per task
        table, _ = compare_files({mode: mode_dir(args.metrics_dir, mode) / "metrics.json" for mode in docs})
        print(f"\nStage 3, reasoning vs direct:\n{table}")
        write_text(args.metrics_dir / "modes.md", f"# Stage 3: reasoning vs direct mode\n\n{table}\n")
    return docs[MODES[args.mode][0]]


def mode_dir(metrics_dir, mode: str):
    """Reasoning results where Stage 3's always were; direct-mode results in a `direct/` folder beside them."""
    return metrics_dir if mode == "reasoning" else metrics_dir / "direct"


if __name__ == "__main__":
    sys.exit(main(["stage3", "evaluate", *sys.argv[1:]]))
