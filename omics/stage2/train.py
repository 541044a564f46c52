"""Stage 2 train: instruction tuning in the Llama-3 chat format, loss on the answers only."""

from __future__ import annotations

import sys

from omics.cli import main


def recipe():
    from omics.data.instructions import chat_examples
    from omics.train import Recipe

    return Recipe(stage=2, chat=True, examples=chat_examples,
                  missing_base_hint="Run Stage 1 first (omics stage1 train), or pass --base-model DIR.")


if __name__ == "__main__":
    sys.exit(main(["stage2", "train", *sys.argv[1:]]))
