"""The training loss: cross-entropy on labelled positions only, never holding the whole 128k-wide logits.

The 128k-way output projection is the costliest layer of a small model and a large share of an 8B one. In
Stages 2-3 most tokens are prompt (no loss), so only the answer positions are projected. The projection +
cross-entropy then runs in Liger's fused kernel when installed (logits never materialised), else in
checkpointed slices (one slice's logits alive at a time, recomputed in backward): at Stage 1's 8k labelled
tokens per micro-batch, full fp32 logits alone would be 4 GB.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from omics.compat import merged_weight, trained_rows
from omics.data.packing import IGNORE
from omics.device import liger_available, mixed_precision

LOGIT_SLICE = 2048  # rows projected at once on the fallback path: 2048 x 128k fp32 = 1 GB


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The matmul dtype: autocast's when on (bf16 hidden states may arrive in fp32 from an fp32 trained norm;
    casting the 128k-row weight up to them would copy it), else the hidden states'."""
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype


def _slice_loss(weight: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor | None = None,
                delta: torch.Tensor | None = None) -> torch.Tensor:
    """`rows`/`delta`: trained rows of the head (PEFT's trainable tokens), their logits computed apart, so no merged
    copy of the 128k-row head is built and no dense gradient of it either."""
    dtype = _compute_dtype(hidden)
    hidden = hidden.to(dtype)
    logits = torch.nn.functional.linear(hidden, weight.to(dtype))
    if rows is not None:
        logits = logits.index_copy(-1, rows, torch.nn.functional.linear(hidden, delta.to(dtype)))
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")


def labelled_cross_entropy(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                           fused: bool = True) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` against `targets` (rows already restricted to labels)."""
    if fused and hidden.is_cuda and liger_available(True):
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        dtype = _compute_dtype(hidden)  # a Triton kernel: autocast does not cast its inputs
        # one weight matrix for the kernel: the head with its trained rows in
        return LigerFusedLinearCrossEntropyLoss(reduction="sum")(merged_weight(head).to(dtype), hidden.to(dtype),
                                                                 targets)
    weight, rows, delta = trained_rows(head)
    if len(hidden) <= LOGIT_SLICE:
        return _slice_loss(weight, hidden, targets, rows, delta)
    return sum(checkpoint(_slice_loss, weight, hidden[i : i + LOGIT_SLICE], targets[i : i + LOGIT_SLICE], rows, delta,
                          use_reentrant=False) for i in range(0, len(hidden), LOGIT_SLICE))


def answer_only_loss(model, inputs: dict[str, torch.Tensor], num_items_in_batch=None, fused: bool = True):
    """Mean cross-entropy over the labelled tokens, normalised by the label count of the whole accumulated
    batch (`num_items_in_batch`, as the Trainer passes it) so gradient accumulation weighs every token once.
    `fused=False` keeps Liger's fused loss off (the `liger` config key)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    targets = inputs["labels"][:, 1:]
    keep = targets != IGNORE
    # Calling the inner decoder skips `model.forward`, the one call accelerate wraps in autocast: without our own,
    # LoRA's fp32 trained norm weights meet bf16 linears ("expected m1 and m2 to have the same dtype"). Autocast
    # rather than casting the trained weights to bf16, which would round their small updates away.
    with mixed_precision(base):
        hidden = base.model(input_ids=inputs["input_ids"], position_ids=inputs["position_ids"],
                            use_cache=False).last_hidden_state  # with a cache, packed rows would attend across
        loss = labelled_cross_entropy(base.lm_head, hidden[:, :-1][keep], targets[keep], fused)
    return loss / (num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1))


class MergeCheck:
    """The answer-only loss of the adapter model, then of the merged model, on the same fixed batches: what
    merging into the base dtype costs, measured on every run (run_summary.json "merge")."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]):
        self.batches = batches
        self.losses: list[float] = []

    @classmethod
    def first_blocks(cls, dataset, collator: Callable, count: int = 4) -> MergeCheck:
        """The first `count` training blocks, one per batch (the same ones on every run of the same data)."""
        return cls([collator([dataset[i]]) for i in range(min(count, len(dataset)))])

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> float:
        device = model.get_input_embeddings().weight.device
        was_training = model.training
        model.eval()
        total = count = 0.0
        for batch in self.batches:  # answer_only_loss autocasts to the weights' dtype itself
            batch = {k: v.to(device) for k, v in batch.items()}
            labelled = (batch["labels"][:, 1:] != IGNORE).sum().item()
            total += answer_only_loss(model, batch, labelled).item() * labelled
            count += labelled
        model.train(was_training)
        self.losses.append(total / max(count, 1))
        return self.losses[-1]

    def summary(self) -> dict[str, float | int] | None:
        if len(self.losses) != 2:
            return None  # nothing was merged (full fine-tuning)
        adapter, merged = self.losses
        return {"adapter_loss": round(adapter, 6), "merged_loss": round(merged, 6),
                "gap": round(merged - adapter, 6), "batches": len(self.batches)}
