"""The stage registry: the CLI's stage commands come from it, and a new stage is one registration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cli, head

from omics import paths
from omics.cli import build_parser, use_root
from omics.stages import STAGES, ExtraData, Stage, registered
from omics.train import RunArgs


def test_the_three_stages_in_order():
    stages = registered()
    assert list(stages) == ["stage1", "stage2", "stage3", "dpo", "grpo"]  # preference/RL tuning after the paper's
    assert [(s.chat, s.evaluation, s.reasoning) for s in stages.values()] == [
        (False, "likelihood", False), (True, "generation", False), (True, "generation", True),
        (True, "generation", False), (True, "generation", False)]


def test_stage_flags_come_from_the_stage():
    parser = build_parser()
    assert [STAGES[s].max_new_tokens for s in ("stage2", "stage3")] == [64, 512]  # the default mode's budget
    stage3_eval = parser.parse_args(["stage3", "evaluate", "--data", "t.jsonl"])
    assert (stage3_eval.mode, stage3_eval.max_new_tokens) == ("reasoning", None)  # None: the mode's budget
    assert not hasattr(parser.parse_args(["stage2", "evaluate", "--data", "t.jsonl"]), "mode")  # one mode
    assert parser.parse_args(["stage1", "train", "--data", "s.txt"]).base_model == paths.BASE_MODEL
    stage3 = parser.parse_args(["stage3", "train", "--data", "r.jsonl", "--replay-data", "s2.jsonl"])
    assert stage3.base_model == paths.model_dir(2) and stage3.config == paths.default_config(3)
    assert RunArgs.from_cli(stage3, STAGES["stage3"]).extra_data == {"replay": Path("s2.jsonl")}
    with pytest.raises(SystemExit):
        parser.parse_args(["stage2", "train", "--data", "t.jsonl", "--replay-data", "s2.jsonl"])
    with pytest.raises(SystemExit):
        parser.parse_args(["stage1", "evaluate", "--data", "s.txt", "--max-samples", "2"])
    assert parser.parse_args(["stage2", "train", "--data", "t.jsonl", "--dry-run"]).dry_run == 3
    with pytest.raises(SystemExit):  # a stage with its own training loop has no dry run to offer
        parser.parse_args(["dpo", "train", "--data", "p.jsonl", "--dry-run"])
    with pytest.raises(SystemExit):
        parser.parse_args(["stage2", "train", "--data", "t.jsonl", "--dry-run", "-2"])


def test_a_new_stage_is_one_registration(tiny_model, tmp_path, monkeypatch):
    """A throwaway Stage 4 (registered here as its file would) gets its train and evaluate commands, trains
    through the shared trainer and is evaluated by the shared evaluator, with no other code."""
    from omics.stage2.train import examples

    preference = Stage(number=4, summary="preference tuning", chat=True, examples=examples,
                       starts_from=paths.model_dir(3), missing_base_hint="Run Stage 3 first.",
                       evaluation="generation", max_new_tokens=4,
                       extra_data=(ExtraData("rejected", "answers the model should not prefer"),))
    monkeypatch.setitem(STAGES, "stage4", preference)
    args = build_parser().parse_args(["stage4", "train", "--data", "p.jsonl", "--rejected-data", "r.jsonl"])
    assert (args.base_model, args.output_dir, args.config) == (
        paths.model_dir(3), paths.model_dir(4), paths.default_config(4))
    assert RunArgs.from_cli(args, preference).extra_data == {"rejected": Path("r.jsonl")}

    (tmp_path / "train.jsonl").write_text("\n".join(head("stage2_train.jsonl", 8)) + "\n", encoding="utf-8")
    assert cli(monkeypatch, tmp_path, "stage4", "train", "--data", "train.jsonl", "--base-model", str(tiny_model),
               "--config", str(paths.default_config(2)), "--set=max_length=256", "--set=max_steps=1",
               "--set=micro_batch_size=8", "--set=grad_accum=1", "--set=lora_r=4",
               "--set=gradient_checkpointing=false") == 0
    assert json.loads((tmp_path / "archive/models/stage4/omics_model.json").read_text())["stage"] == "stage4"
    assert cli(monkeypatch, tmp_path, "stage4", "evaluate", "--data", "train.jsonl", "--max-samples", "1") == 0
    metrics = json.loads((tmp_path / "archive/metrics/stage4/metrics.json").read_text())
    assert metrics["meta"]["stage"] == 4 and metrics["tasks"]


def test_root_moves_every_default_folder(monkeypatch):
    monkeypatch.setattr(paths, "ARCHIVE", paths.ARCHIVE)  # put back after the test
    argv = ["--root", "archive/demo", "stage3", "train", "--data", "r.jsonl"]
    use_root(argv)
    train = build_parser().parse_args(argv)
    assert (train.base_model, train.output_dir, train.metrics_dir) == (
        Path("archive/demo/models/stage2"), Path("archive/demo/models/stage3"), Path("archive/demo/metrics/stage3"))
    use_root(["--root", "elsewhere", "compare"])
    assert build_parser().parse_args(["--root", "elsewhere", "compare"]).metrics_root == Path("elsewhere/metrics")
    use_root(["stage1", "train", "--data", "s.txt"])  # no --root: archive/, and Stage 1 still starts from the base
    stage1 = build_parser().parse_args(["stage1", "train", "--data", "s.txt"])
    assert (stage1.base_model, stage1.output_dir) == (paths.BASE_MODEL, Path("archive/models/stage1"))


def test_a_named_stage_starts_from_the_latest_trained_model(tmp_path, monkeypatch):
    """A stage outside the paper's three has its own name and folders, and continues the first trained model of
    a list (DPO: Stage 3's if there is one, else Stage 2's)."""
    from omics.stage2.train import examples

    monkeypatch.setattr(paths, "ARCHIVE", tmp_path)
    dpo = Stage(number=4, name="dpo", title="DPO", summary="preference tuning", chat=True, examples=examples,
                starts_from=("stage3", "stage2"), missing_base_hint="Run Stage 2 first.", evaluation="generation")
    monkeypatch.setitem(STAGES, "dpo", dpo)
    assert (dpo.model_dir, dpo.metrics_dir, dpo.config) == (
        tmp_path / "models/dpo", tmp_path / "metrics/dpo", paths.CONFIGS / "dpo.yaml")
    assert dpo.base_model == tmp_path / "models/stage3"  # nothing trained: the first, named in the error
    (tmp_path / "models/stage2").mkdir(parents=True)
    (tmp_path / "models/stage2/config.json").write_text("{}")
    assert dpo.base_model == tmp_path / "models/stage2"
    (tmp_path / "models/stage3").mkdir()
    (tmp_path / "models/stage3/config.json").write_text("{}")
    assert build_parser().parse_args(["dpo", "train", "--data", "p.jsonl"]).base_model == tmp_path / "models/stage3"
    assert "DPO train / evaluate" in build_parser().format_help()
