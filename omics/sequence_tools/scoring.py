"""Summed token log-likelihood of whole texts (BOS first, every token after it scored), batched by length."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from omics.evaluate.likelihood import _token_nll, hidden_states
from omics.sequence_tools.batches import length_sorted_batches, pad_batch


@torch.no_grad()
def log_likelihoods(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                    batch_tokens: int) -> list[float]:
    """ln p(text | BOS) per text: the sum over its tokens of ln p(token | BOS and the tokens before it)."""
    device = next(model.parameters()).device
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    scores = [0.0] * len(texts)
    windows = [([tokenizer.bos_token_id, *ids], i) for i, ids in enumerate(encoded)]
    for batch in length_sorted_batches(windows, batch_tokens):
        input_ids, mask = pad_batch([ids for ids, _ in batch], tokenizer.pad_token_id, device)
        hidden = hidden_states(model, input_ids, mask).last_hidden_state
        nll = _token_nll(model.lm_head, hidden[:, :-1], input_ids[:, 1:]) * mask[:, 1:]
        for row, (_, index) in enumerate(batch):
            scores[index] = -nll[row].sum().item()
    return scores
