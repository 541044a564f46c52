"""The training loss: cross-entropy on labelled positions only, never holding the whole 128k-wide logits.

The 128k-way output projection is the costliest layer of a small model and a large share of an 8B one. In
Stages 2-3 most tokens are prompt (no loss), so only the answer positions are projected. The projection +
cross-entropy then runs in Liger's fused kernel when installed (logits never materialised), else in
checkpointed slices (one slice's logits alive at a time, recomputed in backward): at Stage 1's 8k labelled
tokens per micro-batch, full fp32 logits alone would be 4 GB.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from omics.data.packing import IGNORE
from omics.device import liger_available

LOGIT_SLICE = 2048  # rows projected at once on the fallback path: 2048 x 128k fp32 = 1 GB


def _slice_loss(weight: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = torch.nn.functional.linear(hidden, weight.to(hidden.dtype)).float()
    return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")


def labelled_cross_entropy(weight: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor,
                           fused: bool = True) -> torch.Tensor:
    """Summed cross-entropy of `hidden @ weight.T` against `targets` (rows already restricted to labels)."""
    if fused and hidden.is_cuda and liger_available(True):
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        return LigerFusedLinearCrossEntropyLoss(reduction="sum")(weight.to(hidden.dtype), hidden, targets)
    if len(hidden) <= LOGIT_SLICE:
        return _slice_loss(weight, hidden, targets)
    return sum(checkpoint(_slice_loss, weight, hidden[i : i + LOGIT_SLICE], targets[i : i + LOGIT_SLICE],
                          use_reentrant=False) for i in range(0, len(hidden), LOGIT_SLICE))


def answer_only_loss(model, inputs: dict[str, torch.Tensor], num_items_in_batch=None, fused: bool = True):
    """Mean cross-entropy over the labelled tokens, normalised by the label count of the whole accumulated
    batch (`num_items_in_batch`, as the Trainer passes it) so gradient accumulation weighs every token once.
    `fused=False` keeps Liger's fused loss off (the `liger` config key)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.model(input_ids=inputs["input_ids"], position_ids=inputs["position_ids"],
                        use_cache=False).last_hidden_state  # with a cache, packed rows would attend across
    targets = inputs["labels"][:, 1:]
    keep = targets != IGNORE
    # `.weight` of PEFT's trainable-token wrapper is the merged weight: built once per step, not per slice
    loss = labelled_cross_entropy(base.lm_head.weight, hidden[:, :-1][keep], targets[keep], fused)
    return loss / (num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1))
