"""One vector per sequence from a causal LM's hidden states.

Each sequence is read as Stage 1 trained on it: BOS, then the sequence's tokens (no tags, no EOS). Pooling
covers the sequence's tokens only, never BOS. A sequence longer than `max_length` tokens is cut into
consecutive chunks, each read from its own BOS (no context crosses a cut): `mean` averages over all of the
sequence's tokens (each chunk weighted by its tokens), `last` is the last token's state of the last chunk.
A causal model has no CLS token (BOS's state is the same for every sequence), so there is no `cls` pooling.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from omics.errors import UserError
from omics.evaluate.likelihood import hidden_states
from omics.sequence_tools.batches import length_sorted_batches, pad_batch

POOLS = ("mean", "last")


class _Captured(Exception):
    """Raised by the forward hook once the asked layer's output is taken: the layers above it never run."""


def check_layer(config: PreTrainedConfig, layer: int) -> int:
    """`layer` as an index 0..n into HF's `hidden_states` (0 = embeddings, i = decoder layer i's output, n = the
    last layer after the final norm); negative indices count from the end (-1 = n)."""
    n = config.num_hidden_layers
    if not -(n + 1) <= layer <= n:
        raise UserError(f"--layer {layer}: this model has {n} layers; pass 0..{n} or -{n + 1}..-1 (-1 = the last)")
    return layer % (n + 1)


def layer_states(model: PreTrainedModel, input_ids: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
    """Hidden states (batch, tokens, hidden) of `layer` (from `check_layer`), computing no layer above it."""
    if layer == model.config.num_hidden_layers:
        return hidden_states(model, input_ids, mask).last_hidden_state
    module = model.model.embed_tokens if layer == 0 else model.model.layers[layer - 1]
    captured: list[torch.Tensor] = []

    def capture(_module, _inputs, output) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _Captured

    handle = module.register_forward_hook(capture)
    try:
        hidden_states(model, input_ids, mask)
    except _Captured:
        pass
    finally:
        handle.remove()
    return captured[0]


def _chunks(token_ids: list[list[int]], bos: int, max_length: int) -> Iterator[tuple[list[int], int, bool]]:
    """(BOS + up to max_length-1 tokens, sequence index, is its last chunk) for every chunk of every sequence."""
    body = max_length - 1
    for index, ids in enumerate(token_ids):
        for start in range(0, len(ids), body):
            yield [bos, *ids[start : start + body]], index, start + body >= len(ids)


@torch.no_grad()
def embed_sequences(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sequences: list[str], layer: int,
                    pool: str, max_length: int, batch_tokens: int, progress=None) -> np.ndarray:
    """(len(sequences), hidden) float32 vectors; sequences are batched by token length among themselves, so
    callers bound memory by the number they pass at once."""
    device = next(model.parameters()).device
    token_ids = tokenizer(sequences, add_special_tokens=False)["input_ids"]
    sums = np.zeros((len(sequences), model.config.hidden_size), dtype=np.float64)
    counts = np.zeros(len(sequences), dtype=np.int64)
    chunks = list(_chunks(token_ids, tokenizer.bos_token_id, max_length))
    for batch in length_sorted_batches(chunks, batch_tokens):
        input_ids, mask = pad_batch([ids for ids, _, _ in batch], tokenizer.pad_token_id, device)
        states = layer_states(model, input_ids, mask, layer).float()
        if pool == "mean":  # pooled on the device: only (batch, hidden) comes back
            tokens = mask.clone()
            tokens[:, 0] = 0  # BOS out; padding is already 0
            pooled, sizes = (states * tokens[..., None]).sum(1), tokens.sum(1)
        else:
            pooled, sizes = states[torch.arange(len(batch), device=device), mask.sum(1) - 1], torch.ones(len(batch))
        pooled, sizes = pooled.cpu().double().numpy(), sizes.cpu().numpy()
        for row, (_, index, last) in enumerate(batch):
            if pool == "mean" or last:  # `last`: the last chunk's last token only
                sums[index] += pooled[row]
                counts[index] += sizes[row]
        if progress is not None:
            progress.update(sum(last for _, _, last in batch))
    return (sums / counts[:, None]).astype(np.float32)
