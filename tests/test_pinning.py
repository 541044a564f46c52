"""One GPU per process, pinned once: the demo runs each step in-process, and every step asks for the same GPU."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import SAMPLES, head

from omics import device
from omics.cli import main
from omics.commands import demo
from omics.errors import UserError

FAST_TRAIN = ["--set=max_steps=2", "--set=save_steps=2", "--set=eval_steps=2"]  # the demo's: 40 steps


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A process that has pinned nothing yet, on a machine whose GPUs 3 and 5 are visible."""
    if torch.cuda.is_initialized():
        pytest.skip("CUDA already started in this test process: pinning needs a process that has not")
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="GPUs 3 and 5 would hide the real GPUs from later tests")
def test_demo_steps_in_one_process_keep_the_pinned_gpu(fresh_process, tiny_model, tmp_path, caplog):
    """The demo's first three steps (Stage 1 train and evaluate, Stage 2's evaluation of that model) with --gpu 1,
    on the first lines of the samples: each step after the first finds GPU 5 still pinned, instead of looking for a
    second GPU among the one left visible."""
    fresh_process.chdir(tmp_path)
    samples, work = tmp_path / "samples", tmp_path / "demo"
    samples.mkdir()
    for sample in SAMPLES.glob("stage*"):
        (samples / sample.name).write_text("".join(f"{line}\n" for line in head(sample.name, 10)), encoding="utf-8")
    work.mkdir()
    (work / "base-model").symlink_to(tiny_model)
    for step, _ in demo.steps(work, 1, samples)[:3]:
        assert main([*step, *(FAST_TRAIN if step[1] == "train" else [])]) == 0
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5", step[:2]
    recorded = json.loads((work / "metrics" / "stage1" / "parameters.json").read_text())["device"]
    assert recorded["cuda_visible_devices"] == "5"
    assert (work / "metrics" / "stage1" / "metrics.json").is_file()  # the third step's results
    assert main(demo.steps(work, 0, samples)[1][0]) == 2
    assert "--gpu 0: this process already uses --gpu 1" in caplog.text
