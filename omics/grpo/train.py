"""GRPO train: sample a group of answers per question, reward each by the evaluation's parser and metrics against
the known label (omics.rewards), and move the model towards the better ones (TRL's GRPOTrainer, omics.grpo.loop).
Continues the latest trained model (Stage 3, else Stage 2) in its own format: a reasoning model keeps reasoning."""

from __future__ import annotations

import sys

from omics.cli import main
from omics.stages import Stage, register


def examples(path, tokenizer, config, report, meta):
    from omics.data.instructions import chat_examples

    return chat_examples(path, tokenizer, config, report, meta)


def trainer(stage: Stage, args) -> dict:
    from omics.grpo.loop import train

    return train(stage, args)


STAGE = register(Stage(
    number=5, name="grpo", title="GRPO", summary="reinforcement tuning on verifiable task rewards", chat=True,
    examples=examples, starts_from=("stage3", "stage2"),
    missing_base_hint="Train Stage 2 (or 3) first (omics stage2 train), or pass --base-model DIR.",
    evaluation="generation", trainer=trainer, modes_from_model=True))


if __name__ == "__main__":
    sys.exit(main(["grpo", "train", *sys.argv[1:]]))
