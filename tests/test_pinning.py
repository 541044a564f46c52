"""One GPU per process, pinned once: the demo runs each step in-process, and every step asks for the same GPU."""

from __future__ import annotations

import json
import os

import pytest
import torch

from omics import device
from omics.cli import main
from omics.commands import demo
from omics.errors import UserError

FAST_TRAIN = [f"--set={item}" for item in ("max_steps=2", "save_steps=2", "eval_steps=2", "micro_batch_size=2")]
FAST_ANSWERS = ["--max-samples", "1", "--max-new-tokens", "4"]


def shortened(step: list[str]) -> list[str]:
    """A demo step made fast: 2 training steps, or one answer of 4 tokens per task (Stage 1's pass stays)."""
    if step[1] == "train":
        return [*step, *FAST_TRAIN]
    return step if step[0] == "stage1" else [*step, *FAST_ANSWERS]


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A process that has pinned nothing yet, on a machine whose GPUs 3 and 5 are visible."""
    monkeypatch.setattr(device, "_pinned", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    return monkeypatch


def test_pinning_again_keeps_the_gpu_and_another_index_is_refused(fresh_process):
    assert device.pin_one_gpu(1) == "5" and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    fresh_process.setattr(torch.cuda, "is_initialized", lambda: True)  # what a first step on a GPU leaves
    assert device.pin_one_gpu(1) == "5" and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    with pytest.raises(UserError, match=r"--gpu 0: this process already uses --gpu 1 \(CUDA_VISIBLE_DEVICES=5\)"):
        device.pin_one_gpu(0)


def test_first_pin_after_cuda_started_is_a_bug(fresh_process):
    fresh_process.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="CUDA was initialised before the GPU was pinned"):
        device.pin_one_gpu(0)


def test_no_visible_gpu_stays_none(fresh_process):
    fresh_process.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device.pin_one_gpu(0).startswith("none") and os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_demo_steps_in_one_process_keep_the_pinned_gpu(fresh_process, tiny_model, tmp_path, caplog):
    """The demo's first three steps (train, evaluate, the next stage's evaluation of that model) with --gpu 1:
    each finds GPU 5 still pinned, instead of looking for a second GPU among the one left visible."""
    fresh_process.chdir(tmp_path)
    work = tmp_path / "demo"
    work.mkdir()
    (work / "base-model").symlink_to(tiny_model)
    for step, _ in demo.steps(work, gpu=1)[:3]:
        assert main(shortened(step)) == 0
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5", step[:2]
    recorded = json.loads((work / "metrics" / "stage1" / "parameters.json").read_text())["device"]
    assert recorded["cuda_visible_devices"] == "5"
    assert (work / "metrics" / "stage1" / "metrics.json").is_file()  # the third step's results
    assert main(demo.steps(work, gpu=0)[1][0]) == 2
    assert "--gpu 0: this process already uses --gpu 1" in caplog.text
