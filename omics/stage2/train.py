"""Stage 2 train: instruction tuning in the Llama-3 chat format, loss on the answers only."""

from __future__ import annotations

import sys

from omics.cli import main
from omics.stages import Stage, register


def examples(path, tokenizer, config, report, meta):
    from omics.data.instructions import chat_examples

    return chat_examples(path, tokenizer, config, report, meta)


STAGE = register(Stage(
    number=2, summary="instruction tuning", chat=True, examples=examples, starts_from="stage1",
    missing_base_hint="Run Stage 1 first (omics stage1 train), or pass --base-model DIR.",
    evaluation="generation", max_new_tokens=64))


if __name__ == "__main__":
    sys.exit(main(["stage2", "train", *sys.argv[1:]]))
