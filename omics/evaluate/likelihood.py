"""Stage 1 evaluation: held-out likelihood as perplexity and bits per residue, per molecule type.

Bits per residue = total negative log-likelihood (in bits) of a sequence's tokens, EOS included, divided
by its number of residues: unlike perplexity it does not depend on how the tokenizer splits sequences,
so models with different vocabularies (or a DNA BPE) compare directly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import torch
from tqdm import tqdm

from omics.data.pretrain import sequence_windows
from omics.data.validate import DataReport
from omics.device import default_batch_tokens
from omics.io import count_lines
from omics.model import load_model, load_tokenizer

CHUNK = 4096  # windows sorted by length together: bounded memory, little padding
LOGIT_ROWS = 1024  # positions projected to the vocabulary at once: 1024 x 128k fp32 = 0.5 GB


def _batches(windows: list[tuple[list[int], str, int]], batch_tokens: int) -> Iterator[list]:
    windows = sorted(windows, key=lambda w: len(w[0]))
    batch: list = []
    for window in windows:
        if batch and len(window[0]) * (len(batch) + 1) > batch_tokens:
            yield batch
            batch = []
        batch.append(window)
    if batch:
        yield batch


def _token_nll(lm_head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per position, projecting to the 128k vocabulary a slice at a time (never all logits)."""
    flat, flat_targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    losses = [
        torch.nn.functional.cross_entropy(lm_head(flat[i : i + LOGIT_ROWS]).float(), flat_targets[i : i + LOGIT_ROWS],
                                          reduction="none")
        for i in range(0, len(flat), LOGIT_ROWS)
    ]
    return torch.cat(losses).view_as(targets)


def hidden_states(model, input_ids: torch.Tensor, mask: torch.Tensor):
    """The decoder's last hidden states, without the KV cache a plain forward builds and this pass never reads
    (at 8B: 2 x 32 layers x 8 heads x 128 x 2 bytes = 128 kB per token, 8 GiB per 64k-token batch)."""
    return model.model(input_ids=input_ids, attention_mask=mask, use_cache=False)


@torch.no_grad()
def sequence_likelihood(
    model_dir: str | Path, data: str | Path, max_length: int, wrap_tags: bool, batch_tokens: int | None = None,
    dtype: str = "auto",
) -> dict[str, dict[str, float]]:
    """Per molecule type and overall: tokens, residues, nll (nats), perplexity, bits_per_residue."""
    tokenizer = load_tokenizer(model_dir, chat=False)
    model = load_model(model_dir, dtype=dtype).eval()
    device = next(model.parameters()).device
    totals: dict[str, dict[str, float]] = defaultdict(lambda: {"nll": 0.0, "tokens": 0, "residues": 0})
    report = DataReport(str(data))
    windows = sequence_windows(data, tokenizer, max_length, wrap_tags, report)
    # a sequence is done at its last window, the one ending with EOS; the total counts invalid lines too
    progress = tqdm(total=count_lines(Path(data)), desc=f"likelihood {Path(model_dir).name}", unit="seq")
    while chunk := list(islice(windows, CHUNK)):
        for batch in _batches(chunk, default_batch_tokens(batch_tokens)):
            width = max(len(ids) for ids, _, _ in batch)
            input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, _, _) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
            hidden = hidden_states(model, input_ids.to(device), mask.to(device)).last_hidden_state
            nll = _token_nll(model.lm_head, hidden[:, :-1], input_ids[:, 1:].to(device)) * mask[:, 1:].to(device)
            for row, (ids, molecule, residues) in enumerate(batch):
                for key in (molecule, "overall"):
                    totals[key]["nll"] += nll[row].sum().item()
                    totals[key]["tokens"] += len(ids) - 1
                    totals[key]["residues"] += residues
            progress.update(sum(ids[-1] == tokenizer.eos_token_id for ids, _, _ in batch))
    progress.total = progress.n  # what was valid
    progress.close()
    return {key: {**t, "perplexity": math.exp(t["nll"] / max(t["tokens"], 1)),
                  "bits_per_residue": t["nll"] / math.log(2) / max(t["residues"], 1)}
            for key, t in sorted(totals.items(), key=lambda kv: (kv[0] == "overall", kv[0]))}


def format_likelihood_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: one row per molecule type, perplexity and bits/residue of each model, and the change."""
    models = list(results)
    header = "| molecule | " + " | ".join(f"{m} ppl | {m} bits/res" for m in models)
    if len(models) == 2:
        header += " | Δ bits/res"
    lines = [header + " |", "|" + "---|" * (header.count("|"))]
    for molecule in results[models[0]]:
        cells = [f"{results[m][molecule]['perplexity']:.3f} | {results[m][molecule]['bits_per_residue']:.4f}"
                 for m in models]
        row = f"| {molecule} | " + " | ".join(cells)
        if len(models) == 2:
            delta = (results[models[0]][molecule]["bits_per_residue"]
                     - results[models[1]][molecule]["bits_per_residue"])
            row += f" | {delta:+.4f}"
        lines.append(row + " |")
    return "\n".join(lines)
