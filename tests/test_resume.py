"""Exact resume: a Stage 2 run SIGKILLed at each point of its life, then `--resume`d, ends with the same weights
as an uninterrupted run, after exactly max_steps steps; `--resume` on a finished run says so."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import cli, head
from kill import run_in_child, run_killed
from safetensors.torch import load_file

from omics.train import last_checkpoint, set_aside_incomplete_checkpoints

MAX_STEPS = 5  # checkpoints at steps 2 and 4, then the final state at 5
SETTINGS = [f"--set={item}" for item in (
    "max_length=256", "micro_batch_size=2", "grad_accum=1", f"max_steps={MAX_STEPS}", "save_steps=2",
    "logging_steps=1", "lora_r=4", "lora_alpha=8", "gradient_checkpointing=false", "warmup_ratio=0",
    "learning_rate=1e-3")]
WEIGHTS = ("model.safetensors", "adapter/adapter_model.safetensors")
# Equal up to float summation order: MKL may sum a matmul in another order in another process (~1e-9 apart
# measured); one optimizer step moves every trained weight by ~learning_rate (1e-3), so a resume that repeats,
# skips or reorders a step is 1000x beyond this (checked against the run's own checkpoint-4 below).
SAME_WEIGHTS = 1e-6
SAVE_STATE = "transformers.trainer:Trainer._save_optimizer_and_scheduler"  # model written, state not yet
KILLS = {  # kill point → the kills, in order (the 2nd and later while resuming)
    "mid-step": [("omics.train:OmicsTrainer.compute_loss", 3, "")],  # step 3, after checkpoint-2
    "checkpoint-save": [(SAVE_STATE, 2, "")],  # checkpoint-4 half written
    "checkpoint-save-twice": [(SAVE_STATE, 2, ""), (SAVE_STATE, 1, "")],  # ... and again when resumed
    "before-final-save": [("omics.train:save_trained", 1, "")],
    "merge": [("peft.tuners.tuners_utils:BaseTuner.merge_and_unload", 1, "")],
    "move-in": [("pathlib:Path.replace", 2, ".staging")],  # some model files moved in, some not
}


def train_argv(tiny_model: Path, name: str, *flags: str) -> list[str]:
    return ["stage2", "train", "--data", "train.jsonl", "--base-model", str(tiny_model), "--output-dir",
            f"{name}/model", "--metrics-dir", f"{name}/metrics", *SETTINGS, *flags]


@pytest.fixture(scope="module")
def straight(tiny_model, tmp_path_factory):
    """The uninterrupted run every killed one is compared with."""
    root = tmp_path_factory.mktemp("resume")
    (root / "train.jsonl").write_text("\n".join(head("stage2_train.jsonl", 24)) + "\n", encoding="utf-8")
    assert run_in_child(root, train_argv(tiny_model, "straight")) == 0  # as the killed runs: a fresh process
    return SimpleNamespace(root=root, weights={name: load_file(root / "straight/model" / name) for name in WEIGHTS})


@pytest.mark.parametrize("point", KILLS)
def test_killed_then_resumed_equals_uninterrupted(point, straight, tiny_model):
    for number, (target, nth, arg_contains) in enumerate(KILLS[point]):
        resume = ["--resume"] if number else []
        run_killed(straight.root, train_argv(tiny_model, point, *resume), target, nth, arg_contains)
    assert not (straight.root / point / "model" / "config.json").exists()  # no half model looks finished
    assert run_in_child(straight.root, train_argv(tiny_model, point, "--resume")) == 0
    summary = json.loads((straight.root / point / "metrics" / "run_summary.json").read_text())
    assert summary["steps"] == MAX_STEPS
    for name, tensors in straight.weights.items():
        resumed = load_file(straight.root / point / "model" / name)
        assert resumed.keys() == tensors.keys()
        for key, tensor in tensors.items():
            torch.testing.assert_close(resumed[key], tensor, rtol=0, atol=SAME_WEIGHTS, msg=f"{name}: {key}")
    assert not (straight.root / point / "model" / ".staging").exists()


def test_one_step_apart_is_far_beyond_the_tolerance(straight):
    """SAME_WEIGHTS tells runs one step apart from equal ones: every trained tensor moved by 100x more."""
    step4 = load_file(straight.root / "straight/model/checkpoints/checkpoint-4/adapter_model.safetensors")
    step5 = straight.weights["adapter/adapter_model.safetensors"]
    assert step4.keys() == step5.keys()
    assert min((step5[key] - step4[key]).abs().max().item() for key in step5) > 100 * SAME_WEIGHTS


def test_resume_of_a_finished_run_says_it_is_finished(straight, tiny_model, monkeypatch, caplog):
    before = {p: p.stat().st_mtime_ns for p in (straight.root / "straight").rglob("*")}
    with caplog.at_level(logging.ERROR, logger="omics"):
        assert cli(monkeypatch, straight.root, *train_argv(tiny_model, "straight", "--resume")) == 2
    assert "finished" in caplog.text and "straight/metrics/run_summary.json" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in (straight.root / "straight").rglob("*")} == before


def test_a_checkpoint_cut_short_twice_is_set_aside_each_time(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "checkpoint-2").mkdir(parents=True)
    (checkpoints / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    for kill in ("first", "second"):
        (checkpoints / "checkpoint-4").mkdir()
        (checkpoints / "checkpoint-4" / "model.safetensors").write_text(kill)
        (checkpoints / "checkpoint-4" / "trainer_state.json").write_text('{"global_st')  # killed mid-write
        assert last_checkpoint(checkpoints) == checkpoints / "checkpoint-2"
        assert set_aside_incomplete_checkpoints(checkpoints) == ["checkpoint-4"]
    assert (checkpoints / "incomplete-checkpoint-4" / "model.safetensors").read_text() == "second"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "incomplete-checkpoint-4"]
