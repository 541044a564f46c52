"""Every use of a library's private or unstable internals, in one place.

Each function here leans on something its library does not promise to keep (a private attribute, a wrapper's
layout, how two libraries plug together). tests/test_compat.py checks each assumption against the installed
versions and names the library and version when one breaks; pyproject.toml bounds these libraries at their
next untested minor. Everything else in omics uses public APIs.
"""

from __future__ import annotations

from types import MethodType

import torch
from peft.tuners.trainable_tokens import TrainableTokensLayer

# peft: trainable tokens (`trainable_token_indices`). PEFT wraps the embedding and the head in a
# TrainableTokensWrapper whose `token_adapter` is a TrainableTokensLayer holding, per adapter, the trained row
# indices (`token_indices`) and their values (`trainable_tokens_delta`); its forward rebuilds the whole matrix
# (`get_merged_weights`) on every call.

def token_layer(module: torch.nn.Module) -> TrainableTokensLayer | None:
    """The trainable-token layer of an embedding/head (PEFT's wrapper, or the layer itself), else None."""
    layer = getattr(module, "token_adapter", module)
    return layer if isinstance(layer, TrainableTokensLayer) else None


def trained_rows(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """An embedding/head's frozen weight and, under PEFT's trainable tokens (one active adapter, unmerged), the
    trained rows' indices and values, cast to the weight's dtype as PEFT's merge does."""
    layer = token_layer(module)
    if layer is None:
        return module.weight, None, None
    weight = layer.get_base_layer().weight
    if layer.disable_adapters or layer.merged:  # the base weight is the answer: rows merged in, or adapters off
        return weight, None, None
    if len(layer.active_adapters) != 1:
        return layer.get_merged_weights(layer.active_adapters), None, None
    adapter = layer.active_adapters[0]
    rows = torch.tensor(layer.token_indices[adapter], device=weight.device)
    return weight, rows, layer.trainable_tokens_delta[adapter].to(weight)


def merged_weight(module: torch.nn.Module) -> torch.Tensor:
    """The matrix an embedding/head computes with, trained rows included (what PEFT's forward builds)."""
    weight, rows, delta = trained_rows(module)
    return weight if rows is None else weight.index_copy(0, rows, delta)


def _rows_forward(layer: TrainableTokensLayer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """PEFT's forward rebuilds the whole matrix with the trained rows copied in (`index_copy` of the 128k-row
    embedding or head: 1 GB at 8B in bf16, and a dense gradient of that size); this computes the same values
    from the frozen weight and the few trained rows."""
    weight, rows, delta = trained_rows(layer)
    base = layer.get_base_layer()
    if rows is None:
        return TrainableTokensLayer.forward(layer, x, *args, **kwargs)
    if isinstance(base, torch.nn.Linear):
        out = torch.nn.functional.linear(x, weight)
        return out.index_copy(-1, rows, torch.nn.functional.linear(x, delta))
    out = torch.nn.functional.embedding(x, weight, base.padding_idx, base.max_norm, base.norm_type,
                                        base.scale_grad_by_freq, base.sparse)
    hit = x[..., None] == rows  # (..., trained rows): which trained row each token is, if any
    # one-hot matmul, not a gather: a gather's backward accumulates in thread order (not bit-reproducible)
    out = torch.where(hit.any(-1, keepdim=True), hit.to(delta.dtype) @ delta, out)
    scale = layer._get_embed_scale()  # e.g. Gemma's scaled embeddings; None for Llama
    return out if scale is None else out * scale.to(out.dtype)


def use_row_forward(model: torch.nn.Module) -> None:
    """Replace the forward of every trainable-token layer with `_rows_forward` (same values, no merged matrix)."""
    for module in model.modules():
        if isinstance(module, TrainableTokensLayer):
            module.forward = MethodType(_rows_forward, module)


# transformers: the attention implementation a loaded model runs (no public getter in transformers 5)

def attention_of(model: torch.nn.Module) -> str | None:
    return model.config._attn_implementation


# accelerate: the Trainer steps an AcceleratedOptimizer wrapping ours as `.optimizer`

def unwrap_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)


# torchao: its 8-bit AdamW keeps each group's lr as a tensor; LR schedulers write floats

def scheduled_adamw_8bit(groups: list[dict], **kwargs) -> torch.optim.Optimizer:
    """torchao's AdamW8bit, taking in the float learning rates a scheduler wrote before each step."""
    from torchao.optim import AdamW8bit  # optional kernels: imported only when this optimizer is configured

    class ScheduledAdamW8bit(AdamW8bit):
        def step(self, closure=None):
            for group in self.param_groups:
                if not torch.is_tensor(group["lr"]):
                    group["lr"] = torch.tensor(float(group["lr"]))
            return super().step(closure)

    return ScheduledAdamW8bit(groups, **kwargs)


# trl: GRPOTrainer, given a PeftModel and beta > 0, copies its adapter into a frozen adapter named "ref" and computes
# the reference log-probabilities with it; with no adapter of that name, with the adapter disabled

def drop_reference_copy(model) -> None:
    """Drop the copy of a fresh adapter TRL's GRPOTrainer keeps as its reference: the adapter disabled is the same
    model (LoRA's B starts at zero), without a second adapter in memory, in the checkpoints and the saved adapter."""
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")


def load_best_checkpoint(trainer) -> None:
    """What HF's Trainer does at the end of `train()` with load_best_model_at_end (a private method): a resumed
    run whose checkpoint is already at the last step ends without `train()`, and must load the best alike."""
    trainer._load_best_model()
