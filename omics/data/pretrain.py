"""Stage 1 data: a .txt of sequences → token windows → packed blocks with loss on every token."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from omics.data.packing import Example
from omics.data.validate import DataReport, read_sequences
from omics.sequences import Molecule, wrap

TOKENIZE_BATCH = 1024


def sequence_windows(
    path: str | Path, tokenizer: PreTrainedTokenizerBase, max_length: int, wrap_tags: bool, report: DataReport
) -> Iterator[tuple[list[int], Molecule, int]]:
    """Yield (token ids, molecule, residues) per window: BOS + up to max_length-2 tokens (+ EOS at the end).

    A sequence longer than one window is cut into consecutive windows; each starts with BOS so it reads
    like the start of a document, and only the last ends with EOS, so the model learns where sequences end.
    """
    body = max_length - 2
    lines = read_sequences(path, report)
    while batch := list(islice(lines, TOKENIZE_BATCH)):
        texts = [wrap(seq, mol) if wrap_tags else seq for seq, mol in batch]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        for (sequence, molecule), ids in zip(batch, encoded, strict=True):
            starts = range(0, len(ids), body)
            if len(starts) > 1:
                report.notes["sequences cut into several windows"] += 1
            for start in starts:
                window = [tokenizer.bos_token_id, *ids[start : start + body]]
                if start + body >= len(ids):
                    window.append(tokenizer.eos_token_id)
                # residues in this window, proportional for cut sequences; cumulative rounding sums exactly
                end = min(len(ids), start + body)
                share = round(len(sequence) * end / len(ids)) - round(len(sequence) * start / len(ids))
                yield window, molecule, share


def pretrain_examples(
    path: str | Path, tokenizer: PreTrainedTokenizerBase, max_length: int, wrap_tags: bool, report: DataReport
) -> Iterator[Example]:
    """Loss on every token: continued pretraining learns the sequences themselves."""
    for ids, _, _ in sequence_windows(path, tokenizer, max_length, wrap_tags, report):
        yield ids, list(ids)
