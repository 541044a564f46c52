"""Optimizers: LoRA+ groups, the step-in-backward wrapper, 8-bit AdamW with schedulers and bf16 rounding."""

from __future__ import annotations

import copy

import pytest
import torch

from omics.config import TrainConfig
from omics.optim import StepInBackward, loraplus_groups, make_optimizer, optimizer_factory


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3) -> None:
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    torch.manual_seed(1)
    for _ in range(steps):
        loss = model(torch.randn(5, 8)).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()


def test_step_in_backward_matches_a_normal_step_under_a_schedule():
    config = TrainConfig(learning_rate=1e-2)
    reference, fused = _model(), _model()
    _train(reference, torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.0))
    _train(fused, StepInBackward([{"params": list(fused.parameters()), "lr": 1e-2}],
                                 optimizer_factory(config, bf16_weights=False)))
    for a, b in zip(reference.parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(a, b)
        assert b.grad is None  # gradients are freed as soon as they are used


def test_step_in_backward_state_round_trip():
    config = TrainConfig(learning_rate=1e-2)
    model = _model()
    optimizer = StepInBackward([{"params": list(model.parameters()), "lr": 1e-2}],
                               optimizer_factory(config, bf16_weights=False))
    _train(model, optimizer, steps=2)
    state = copy.deepcopy(optimizer.state_dict())
    clone = copy.deepcopy(model)
    restored = StepInBackward([{"params": list(clone.parameters()), "lr": 1.0}],
                              optimizer_factory(config, bf16_weights=False))
    restored.load_state_dict(state)
    assert restored.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    exp_avg = [o.state[p]["exp_avg"] for p, (o, _) in optimizer.inner.items()]
    restored_avg = [o.state[p]["exp_avg"] for p, (o, _) in restored.inner.items()]
    for a, b in zip(exp_avg, restored_avg, strict=True):
        torch.testing.assert_close(a, b)


def test_loraplus_gives_b_matrices_the_ratio():
    model = torch.nn.Module()
    model.lora_A = torch.nn.Parameter(torch.zeros(2))
    model.lora_B = torch.nn.Parameter(torch.zeros(2))
    groups = loraplus_groups(model, TrainConfig(learning_rate=1e-4, loraplus_lr_ratio=16))
    assert [g["lr"] for g in groups] == [1e-4, pytest.approx(1.6e-3)]
    assert groups[1]["params"][0] is model.lora_B


def test_8bit_adamw_takes_scheduler_floats_and_rounds_bf16_stochastically():
    pytest.importorskip("torchao")
    weight = torch.nn.Parameter(torch.ones(4096, dtype=torch.bfloat16))
    config = TrainConfig(optimizer="adamw_8bit", learning_rate=1e-4, weight_decay=0.0)
    module = torch.nn.Module()
    module.weight = weight
    optimizer = make_optimizer(module, config)
    optimizer.param_groups[0]["lr"] = 1e-4  # what an LR scheduler writes: a float
    weight.grad = torch.ones_like(weight)
    optimizer.step()
    # Adam's first step moves every weight by ~lr; 1 - 1e-4 is not a bf16 number (spacing 2^-8 below 1), so
    # round-to-nearest would leave every weight at 1.0. Stochastic rounding keeps the mean step.
    assert weight.float().mean().item() == pytest.approx(1 - 1e-4, abs=3e-5)
    assert (weight != 1).any()
