"""Stage 3 train: reasoning instruction tuning, mixed with replayed Stage 2 examples against forgetting."""

from __future__ import annotations

import sys

from omics.cli import main
from omics.stages import ExtraData, Stage, register


def examples(path, tokenizer, config, report, meta):
    from omics.data.instructions import chat_examples, reasoning_records, sample_replay
    from omics.data.validate import DataReport

    records = reasoning_records(path, report, config)
    if "replay" in meta["extra"]:
        replay_report = DataReport(meta["extra"]["replay"])
        replay = sample_replay(meta["extra"]["replay"], round(config.replay_ratio * len(records)),
                               replay_report, config)
        meta["replay"] = {"examples": len(replay), "ratio": config.replay_ratio, **replay_report.to_dict()}
        records += replay
    return chat_examples(path, tokenizer, config, report, meta, records=iter(records))


STAGE = register(Stage(
    number=3, summary="reasoning tuning", chat=True, examples=examples, starts_from="stage2",
    missing_base_hint="Run Stage 2 first (omics stage2 train), or pass --base-model DIR.",
    evaluation="generation", modes=("reasoning", "direct"), max_new_tokens=512,
    extra_data=(ExtraData("replay", "Stage 2 examples mixed back in against forgetting"),)))


if __name__ == "__main__":
    sys.exit(main(["stage3", "train", *sys.argv[1:]]))
