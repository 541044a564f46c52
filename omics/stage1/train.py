"""Stage 1 train: continued pretraining on raw sequences, loss on every token, packed windows."""

from __future__ import annotations

import sys

from omics.cli import main


def recipe():
    from omics.data.pretrain import pretrain_examples
    from omics.train import Recipe

    def examples(path, tokenizer, config, report, meta):
        return pretrain_examples(path, tokenizer, config.max_length, config.wrap_tags, report)

    return Recipe(stage=1, chat=False, examples=examples, missing_base_hint=(
        "Download the base model: huggingface-cli download meta-llama/Meta-Llama-3.1-8B "
        "--local-dir ./Meta-Llama-3.1-8B, or pass --base-model DIR."))


if __name__ == "__main__":
    sys.exit(main(["stage1", "train", *sys.argv[1:]]))
