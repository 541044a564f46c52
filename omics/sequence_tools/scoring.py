"""Summed token log-likelihood of whole texts (BOS first, every token after it scored), batched by length."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from omics.evaluate.likelihood import _token_nll, hidden_states
from omics.sequence_tools.batches import length_sorted_batches, pad_batch


@torch.no_grad()
def log_likelihoods(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                    batch_tokens: int, progress=None) -> list[float]:
    """ln p(text | BOS) per text: the sum over its tokens of ln p(token | BOS and the tokens before it). A text
    given more than once (the ref window of each alt allele) is scored once."""
    device = next(model.parameters()).device
    unique = list(dict.fromkeys(texts))
    encoded = tokenizer(unique, add_special_tokens=False)["input_ids"]
    scores: dict[str, float] = {}
    if progress is not None:
        progress.update(len(texts) - len(unique))  # repeats are scored with their first
    windows = [([tokenizer.bos_token_id, *ids], text) for text, ids in zip(unique, encoded, strict=True)]
    for batch in length_sorted_batches(windows, batch_tokens):
        input_ids, mask = pad_batch([ids for ids, _ in batch], tokenizer.pad_token_id, device)
        hidden = hidden_states(model, input_ids, mask).last_hidden_state
        nll = _token_nll(model.lm_head, hidden[:, :-1], input_ids[:, 1:]) * mask[:, 1:]
        for (_, text), total in zip(batch, nll.sum(1).tolist(), strict=True):  # one device sync per batch
            scores[text] = -total
        if progress is not None:
            progress.update(len(batch))
    return [scores[text] for text in texts]
