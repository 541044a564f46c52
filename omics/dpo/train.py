"""DPO train: preference pairs after instruction or reasoning tuning, with TRL's DPO trainer (omics.dpo.trainer).

The stage continues the latest trained model (Stage 3's, else Stage 2's), keeps its chat template, system
prompt and answer format, and is evaluated like it (a reasoning model in reasoning mode).
"""

from __future__ import annotations

import sys

from omics.cli import main
from omics.errors import UserError
from omics.stages import Stage, register


def examples(path, tokenizer, config, report, meta):
    raise UserError("omics dpo train --dry-run: DPO trains pairs, not instruction examples; run it without "
                    "--dry-run (--set max_steps=1 for a quick check)")


def train(stage, args):
    from omics.dpo.trainer import train  # TRL, torch: only when a DPO run starts

    return train(stage, args)


STAGE = register(Stage(
    number=4, name="dpo", title="DPO", summary="preference tuning on chosen/rejected answer pairs", chat=True,
    examples=examples, starts_from=("stage3", "stage2"), trainer=train, modes_from_model=True,
    missing_base_hint="Run Stage 2 (or 3) first (omics stage2 train), or pass --base-model DIR.",
    evaluation="generation"))


if __name__ == "__main__":
    sys.exit(main(["dpo", "train", *sys.argv[1:]]))
