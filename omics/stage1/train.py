"""Stage 1 train: continued pretraining on raw sequences, loss on every token, packed windows."""

from __future__ import annotations

import sys

from omics import paths
from omics.cli import main
from omics.stages import Stage, register


def examples(path, tokenizer, config, report, meta):
    from omics.data.pretrain import pretrain_examples

    return pretrain_examples(path, tokenizer, config.max_length, config.wrap_tags, report)


STAGE = register(Stage(
    number=1, summary="continued pretraining on raw sequences", chat=False, examples=examples,
    starts_from=paths.BASE_MODEL, evaluation="likelihood", missing_base_hint=(
        "Download the base model: huggingface-cli download meta-llama/Meta-Llama-3.1-8B "
        "--local-dir ./Meta-Llama-3.1-8B, or pass --base-model DIR.")))


if __name__ == "__main__":
    sys.exit(main(["stage1", "train", *sys.argv[1:]]))
