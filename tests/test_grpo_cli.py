"""`omics grpo train|evaluate` on the tiny model: a few GRPO steps log rewards per task and save a loadable model in
its base's format (direct, and reasoning in bf16), evaluation follows that format, bad input is named by line."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import cli, head

from omics.config import REASONING_PROMPT, SYSTEM_PROMPT
from omics.evaluate.tasks import build_task_specs
from omics.grpo.loop import TaskRewards
from omics.model_card import ModelCard, read_card
from omics.stages import ANSWER_TAGS

FAST = [f"--set={item}" for item in (
    "num_generations=2", "max_completion_length=8", "micro_batch_size=4", "grad_accum=1", "lora_r=4",
    "gradient_checkpointing=false", "logging_steps=1")]
BAD_LINE = 3
PER_TASK = "rewards_per_task/{}/correctness_{}"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def train_lines() -> list[str]:
    """Four bundled examples (gc_content, sirnaEfficiency-demo) and a broken line 3."""
    lines = [line for line in head("stage2_train.jsonl", 12) if '"gc_content"' in line or "sirna" in line][:4]
    return [*lines[:BAD_LINE - 1], '{"input": "no closing brace"', *lines[BAD_LINE - 1:]]


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo-run")
    (root / "train.jsonl").write_text("\n".join(train_lines()) + "\n", encoding="utf-8")
    (root / "test.jsonl").write_text("\n".join(head("stage2_test.jsonl", 2)) + "\n", encoding="utf-8")
    reasoning_base = root / "stage3"  # the tiny model as a reasoning model's folder: its card has answer tags
    shutil.copytree(tiny_model, reasoning_base)
    ModelCard(stage="stage3", answer_tags=ANSWER_TAGS).write(reasoning_base)
    with pytest.MonkeyPatch.context() as mp:
        codes = {
            "train": cli(mp, root, "grpo", "train", "--data", "train.jsonl", "--base-model", str(tiny_model),
                         "--output-dir", "models/grpo", "--metrics-dir", "metrics/grpo", "--set=max_steps=2", *FAST),
            "evaluate": cli(mp, root, "grpo", "evaluate", "--data", "test.jsonl", "--model", "models/grpo",
                            "--metrics-dir", "metrics/grpo", "--max-new-tokens", "8"),
            "train_bf16": cli(mp, root, "grpo", "train", "--data", "train.jsonl", "--base-model", str(reasoning_base),
                              "--output-dir", "models/grpo-r", "--metrics-dir", "metrics/grpo-r", "--set=max_steps=1",
                              "--set=dtype=bf16", *FAST),
            "evaluate_reasoning": cli(mp, root, "grpo", "evaluate", "--data", "test.jsonl", "--model",
                                      "models/grpo-r", "--metrics-dir", "metrics/grpo-r", "--max-new-tokens", "8"),
        }
    return SimpleNamespace(root=root, codes=codes, base=str(tiny_model))


def test_commands_succeed(run):
    assert run.codes == {"train": 0, "evaluate": 0, "train_bf16": 0, "evaluate_reasoning": 0}


def test_rewards_kl_and_lengths_logged_per_step_and_task(run):
    summary = read_json(run.root / "metrics/grpo/run_summary.json")
    steps = [entry for entry in summary["log_history"] if "reward" in entry]
    assert summary["steps"] == 2 and len(steps) == 2
    for entry in steps:
        assert {"reward", "reward_std", "kl", "completions/mean_length", "rewards/correctness/mean"} <= set(entry)
        assert entry["completions/mean_length"] <= 8
        per_task = [key for key in entry if key.startswith("rewards_per_task/")]
        assert per_task and {key.split("/")[1] for key in per_task} <= {"gc_content", "sirnaEfficiency-demo"}
    events = list((run.root / "metrics/grpo/tensorboard").rglob("events.out.tfevents.*"))
    assert events and any(b"rewards_per_task/gc_content" in path.read_bytes() for path in events)


def test_bad_line_reported_by_number(run):
    report = read_json(run.root / "metrics/grpo/data_report.json")["report"]
    assert report["valid"] == 4 and report["first_skipped_lines"] == {next(iter(report["skipped_by_reason"])):
                                                                       [BAD_LINE]}


def test_saved_model_loads_with_its_card(run):
    from transformers import AutoModelForCausalLM

    model_dir = run.root / "models/grpo"
    AutoModelForCausalLM.from_pretrained(model_dir)
    card = read_card(model_dir)
    assert (card.stage, card.answer_tags, card.system_prompt) == ("grpo", None, SYSTEM_PROMPT)
    assert set(card.tasks) == {"gc_content", "sirnaEfficiency-demo"}
    assert not (model_dir / "adapter/ref").exists()  # the reference is the adapter disabled, not a saved copy


def test_reasoning_base_keeps_its_format_and_adds_the_format_reward(run):
    card = read_card(run.root / "models/grpo-r")
    assert card.answer_tags == ANSWER_TAGS and card.stage == "grpo"
    params = read_json(run.root / "metrics/grpo-r/parameters.json")
    assert params["system_prompt"] == REASONING_PROMPT and params["config"]["dtype"] == "bf16"
    logged = [entry for entry in read_json(run.root / "metrics/grpo-r/run_summary.json")["log_history"]
              if "reward" in entry]
    assert len(logged) == 1 and "rewards/format/mean" in logged[0]


def test_evaluation_mode_follows_the_model(run):
    assert read_json(run.root / "metrics/grpo/metrics.json")["meta"]["mode"] == "direct"
    reasoning = read_json(run.root / "metrics/grpo-r/metrics.json")
    assert reasoning["meta"]["mode"] == "reasoning" and reasoning["meta"]["n_examples"] == 2
    rows = [json.loads(line) for line in (run.root / "metrics/grpo-r/predictions.jsonl").open()]
    assert all(row["format_ok"] is not None for row in rows)  # read inside <answer> tags


def test_finished_run_is_neither_replaced_nor_resumed(run, caplog):
    caplog.set_level(logging.ERROR, logger="omics")
    with pytest.MonkeyPatch.context() as mp:
        again = ["grpo", "train", "--data", "train.jsonl", "--base-model", run.base, "--output-dir", "models/grpo",
                 "--metrics-dir", "metrics/grpo"]
        assert cli(mp, run.root, *again) == 2
        assert "a previous run exists" in caplog.text
        assert cli(mp, run.root, *again, "--resume") == 2
        assert "this run is finished" in caplog.text


def test_resume_after_training_saves_the_final_checkpoint(run, tmp_path):
    """Killed after its last step, before the model was saved: --resume trains nothing and saves the model."""
    models, metrics = tmp_path / "models", tmp_path / "metrics"
    shutil.copytree(run.root / "models/grpo", models)
    shutil.copytree(run.root / "metrics/grpo", metrics)
    for name in ("config.json", "model.safetensors"):
        (models / name).unlink()
    (metrics / "run_summary.json").unlink()
    with pytest.MonkeyPatch.context() as mp:
        assert cli(mp, run.root, "grpo", "train", "--data", "train.jsonl", "--base-model", run.base, "--output-dir",
                   str(models),
                   "--metrics-dir", str(metrics), "--resume", "--set=max_steps=2", *FAST) == 0
    summary = read_json(metrics / "run_summary.json")
    assert summary["steps"] == 2 and summary["train_loss"] is None and (models / "config.json").is_file()


def test_bad_line_stop_names_file_and_line(run, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="omics")
    with pytest.MonkeyPatch.context() as mp:
        assert cli(mp, run.root, "grpo", "train", "--data", "train.jsonl", "--base-model", run.base, "--output-dir",
                   str(tmp_path / "m"), "--metrics-dir", str(tmp_path / "r"), "--set=on_bad_line=stop") == 2
    assert f"train.jsonl:{BAD_LINE}:" in caplog.text and not (tmp_path / "m").exists()


def test_groups_that_do_not_fill_a_step_are_refused_before_any_file(run, tmp_path, caplog):
    with pytest.MonkeyPatch.context() as mp:
        assert cli(mp, run.root, "grpo", "train", "--data", "train.jsonl", "--base-model", run.base, "--output-dir",
                   str(tmp_path / "m"), "--metrics-dir", str(tmp_path / "r"), *FAST,
                   "--set=num_generations=3", "--set=micro_batch_size=4", "--set=grad_accum=1") == 2
    assert "must be a multiple of num_generations (3)" in caplog.text and not (tmp_path / "r").exists()


def test_task_rewards_logged_per_task():
    """Per batch and task, the mean and spread of the rewards: gc_content 0.9 and 0.5 (range width 62.1: answers
    6.21 and 31.05 away from 50) → mean 0.7, std 0.2; the binary task 1 and 0 → 0.5, 0.5."""
    records = [{"task": "gc_content", "label": 19.15, "input": "q", "output": "19.15"},
               {"task": "gc_content", "label": 81.25, "input": "q", "output": "81.25"},
               {"task": "emp-x", "label": "positive", "input": "q", "output": "positive"},
               {"task": "emp-x", "label": "negative", "input": "q", "output": "negative"}]
    from omics.labels import summarize_records

    rewards = TaskRewards(build_task_specs(summarize_records(records)), reasoning=False)
    logged: dict[str, float] = {}
    answers = ["56.21", "18.95", "positive", "positive"]
    values = rewards.correctness([[{"role": "assistant", "content": a}] for a in answers],
                                 task=["gc_content", "gc_content", "emp-x", "emp-x"],
                                 label=[json.dumps(v) for v in (50.0, 50.0, "positive", "negative")],
                                 log_metric=logged.__setitem__)
    assert values == pytest.approx([0.9, 0.5, 1.0, 0.0])
    assert logged == pytest.approx({PER_TASK.format("gc_content", "mean"): 0.7, PER_TASK.format("emp-x", "mean"): 0.5,
                                    PER_TASK.format("gc_content", "std"): 0.2, PER_TASK.format("emp-x", "std"): 0.5})


def test_grpo_command_follows_its_models_format():
    from omics.cli import build_parser
    from omics.stages import registered

    stages = registered()
    grpo = stages["grpo"]
    assert grpo.base_model.name in ("stage3", "stage2") and grpo.config.name == "grpo.yaml" and grpo.config.is_file()
    direct, reasoning = grpo.evaluated_as(ModelCard()), grpo.evaluated_as(ModelCard(answer_tags=ANSWER_TAGS))
    assert (direct.modes, direct.max_new_tokens) == (("direct",), 64)
    assert (reasoning.modes, reasoning.max_new_tokens) == (("reasoning", "direct"), 512)
    assert build_parser().parse_args(["grpo", "train", "--data", "t.jsonl"]).config == grpo.config


def test_the_base_models_label_rules_win_over_a_small_grpo_file():
    """A GRPO file is often a few lines of the Stage 2 data: its one-example range would make a regression reward
    exact-match only, and its stray class would turn a binary task multiclass."""
    from omics.grpo.loop import label_summary
    from omics.model_card import ModelCard

    base = ModelCard(tasks={"gc_content": {"n": 300, "lo": 20.0}, "emp": {"n": 300}})
    small = {"gc_content": {"n": 1, "lo": 55.0}, "new-task": {"n": 6}}
    assert label_summary(base, small) == {"gc_content": {"n": 300, "lo": 20.0}, "emp": {"n": 300},
                                          "new-task": {"n": 6}}
