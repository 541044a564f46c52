"""`omics bench memory`: the traced step's parts add up, agree with the CPU allocator, and catch mixed precision."""

from __future__ import annotations

import json

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from omics.bench.memory import GpuRules
from omics.cli import main


def test_memory_trace_adds_up_and_matches_the_allocator(tmp_path):
    out = tmp_path / "memory.json"
    assert main(["bench", "memory", "--shape", "tiny", "--stages", "2", "--layers", "2", "--set", "max_length=256",
                 "--set", "micro_batch_size=2", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    stage = doc["stage2"]
    parts = ("weights_gib", "gradients_gib", "optimizer_gib", "activations_gib", "batch_gib")
    assert stage["peak_gib"] == pytest.approx(sum(stage[p] for p in parts), abs=0.002)
    frozen_bf16 = (stage["parameters"] - stage["trained_parameters"]) * 2 / 2**30
    assert frozen_bf16 <= stage["weights_gib"] < frozen_bf16 + stage["trained_parameters"] * 4 / 2**30 + 0.002
    assert 0 < stage["loss_gib"] <= stage["activations_gib"]  # 128k-vocab logit slices: most of a tiny model's step
    assert {row["dtype"] for row in doc["validation"]} == {"fp32", "bf16"}
    for row in doc["validation"]:  # tracer vs the allocator's own counts, same step, same shapes
        assert row["traced_over_measured"] == pytest.approx(1.0, abs=0.02), row


def test_fake_trace_refuses_mixed_precision_matmuls():
    with FakeTensorMode(), GpuRules():
        torch.ones(2, 4, dtype=torch.bfloat16) @ torch.ones(4, 2, dtype=torch.bfloat16)
        with pytest.raises(RuntimeError, match="same dtype"):
            torch.ones(2, 4) @ torch.ones(4, 2, dtype=torch.bfloat16)
