"""Right-padded batches of token ids: with causal attention a token never sees the padding after it, so a
sequence's states are the same in any batch (up to float summation order)."""

from __future__ import annotations

import torch

from omics.evaluate.likelihood import _batches as length_sorted_batches  # sorted by length, under a token budget

__all__ = ["length_sorted_batches", "pad_batch"]


def pad_batch(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask), both (len(rows), longest row), on `device`."""
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    return input_ids.to(device), mask.to(device)
