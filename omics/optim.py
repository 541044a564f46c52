"""Optimizers: LoRA+ parameter groups, and the pieces that let 8B full fine-tuning fit one 48 GB GPU.

Full fine-tuning memory for Llama-3.1-8B (embeddings and output head frozen: 6.98B trained weights), as
`omics bench memory` traces Stage 3's default step (8 x 1024 tokens, bf16): peak 33.3 GiB = bf16 weights
14.96 GiB + 8-bit AdamW states (torchao, ~2 B/param) 13.20 GiB (computed: fake tensors cannot run torchao's
step) + no gradient buffer (each weight is updated as soon as its gradient is accumulated, `StepInBackward`,
instead of 13 GiB of bf16 gradients) + activations with checkpointing 5.17 GiB (2.72 GiB of them the loss's
logit slices without Liger). bf16 weights lose 1e-5 updates to rounding (the bf16 step at 1.0 is 2^-8), so
torchao rounds them stochastically: unbiased on average, no fp32 master copy needed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from omics.compat import scheduled_adamw_8bit
from omics.config import TrainConfig
from omics.device import use_cuda

OptimizerFactory = Callable[[list[dict]], torch.optim.Optimizer]


def loraplus_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict]:
    """LoRA+: B matrices learn `loraplus_lr_ratio` times faster than everything else trained."""
    fast = [p for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and "lora_B" not in n]
    return [g for g in (
        {"params": rest, "lr": config.learning_rate},
        {"params": fast, "lr": config.learning_rate * config.loraplus_lr_ratio},
    ) if g["params"]]


def optimizer_factory(config: TrainConfig, bf16_weights: bool) -> OptimizerFactory:
    if config.optimizer == "adamw_8bit":
        return lambda groups: scheduled_adamw_8bit(groups, lr=config.learning_rate, weight_decay=config.weight_decay,
                                                   bf16_stochastic_round=bf16_weights)
    if config.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return lambda groups: Adafactor(groups, lr=config.learning_rate, scale_parameter=False,
                                        relative_step=False, weight_decay=config.weight_decay)
    return lambda groups: torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay,
                                            fused=use_cuda())


class StepInBackward(torch.optim.Optimizer):
    """Apply each parameter's update inside backward, as soon as its gradient is complete, then free it.

    The Trainer sees an ordinary optimizer: its scheduler sets this optimizer's group learning rates,
    which every per-parameter step reads; `step`/`zero_grad` have nothing left to do. Needs one micro-batch
    per step (no accumulation) and no global gradient clipping (no full gradient ever exists).
    """

    def __init__(self, groups: list[dict], factory: OptimizerFactory):
        super().__init__(groups, {})
        # the step's gradient norm, for the logs: summed on the device, read only when logged (no sync per weight)
        self.squared_norm: torch.Tensor | float = 0.0
        self.grad_norm: torch.Tensor | float = 0.0
        self.inner: dict[torch.nn.Parameter, tuple[torch.optim.Optimizer, dict]] = {}
        for group in self.param_groups:
            for param in group["params"]:
                self.inner[param] = (factory([{"params": [param], "lr": group["lr"]}]), group)
                param.register_post_accumulate_grad_hook(self._update)

    def _update(self, param: torch.nn.Parameter) -> None:
        optimizer, group = self.inner[param]
        optimizer.param_groups[0]["lr"] = group["lr"]  # the scheduler's float: no device read
        self.squared_norm = self.squared_norm + param.grad.float().pow(2).sum()
        optimizer.step()
        param.grad = None

    def step(self, closure=None):  # the updates already happened during backward; close the step's norm
        self.grad_norm, self.squared_norm = self.squared_norm**0.5, 0.0

    def zero_grad(self, set_to_none: bool = True) -> None:
        return None

    def state_dict(self) -> dict:
        return {"groups": [{"lr": g["lr"], "initial_lr": g.get("initial_lr")} for g in self.param_groups],
                "inner": [optimizer.state_dict() for optimizer, _ in self.inner.values()]}

    def load_state_dict(self, state: dict) -> None:
        for group, saved in zip(self.param_groups, state["groups"], strict=True):
            group.update({k: v for k, v in saved.items() if v is not None})
        for (optimizer, _), saved in zip(self.inner.values(), state["inner"], strict=True):
            optimizer.load_state_dict(saved)


def make_optimizer(model: torch.nn.Module, config: TrainConfig,
                   factory: OptimizerFactory | None = None) -> torch.optim.Optimizer:
    """The configured optimizer; `factory` replaces its update rule (the memory trace's stateless stand-in)."""
    bf16_weights = any(p.dtype == torch.bfloat16 for p in model.parameters() if p.requires_grad)
    factory = factory or optimizer_factory(config, bf16_weights)
    groups = loraplus_groups(model, config)
    return StepInBackward(groups, factory) if config.optimizer_in_backward else factory(groups)
