"""Padding-free packing: examples → fixed-length blocks, cached as memory-mapped Arrow, and their collator.

A block holds whole examples (best-fit-decreasing within a streaming buffer) and their lengths. The
collator turns lengths into per-example position ids; transformers derives a block-diagonal causal mask
from restarting position ids (SDPA/eager/flex) or runs varlen flash-attention, so no example attends to
another and no compute goes to padding.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from datasets import Dataset

IGNORE = -100
Example = tuple[list[int], list[int]]  # input_ids, labels (IGNORE where no loss)
SCHEMA = pa.schema(
    [("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())), ("lengths", pa.list_(pa.int32()))]
)


def _block(examples: list[Example]) -> dict[str, list[int]]:
    ids, labels, lengths = [], [], []
    for example_ids, example_labels in examples:
        ids += example_ids
        labels += [IGNORE] + example_labels[1:]  # no target across the boundary into the next example
        lengths.append(len(example_ids))
    return {"input_ids": ids, "labels": labels, "lengths": lengths}


def _best_fit(examples: list[Example], block_len: int) -> Iterator[dict[str, list[int]]]:
    bins: list[list[Example]] = []
    free: list[tuple[int, int]] = []  # sorted (free space, bin index)
    for example in sorted(examples, key=lambda e: -len(e[0])):
        size = len(example[0])
        slot = bisect.bisect_left(free, (size, -1))
        if slot == len(free):
            bins.append([example])
            bisect.insort(free, (block_len - size, len(bins) - 1))
            continue
        space, index = free.pop(slot)
        bins[index].append(example)
        bisect.insort(free, (space - size, index))
    yield from (_block(b) for b in bins)


def pack(examples: Iterable[Example], block_len: int, buffer: int = 8192) -> Iterator[dict[str, list[int]]]:
    """Pack examples of at most `block_len` tokens into blocks; memory is bounded by `buffer` examples."""
    pending: list[Example] = []
    for example in examples:
        if len(example[0]) > block_len:
            raise ValueError(f"example of {len(example[0])} tokens exceeds block length {block_len}")
        pending.append(example)
        if len(pending) == buffer:
            yield from _best_fit(pending, block_len)
            pending = []
    if pending:
        yield from _best_fit(pending, block_len)


def file_sha256(path: str | Path) -> str:
    """Content hash of a data file, computed once per process for a given (path, size, mtime): a run names
    its data in the cache key and in the run records, and a paper-size file takes seconds to read."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


SMALL_FILE = 16 << 20  # hashed whole; larger files (weights) are named by size and mtime, reading GBs is slow
TOKENIZER_FILES = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab*", "merges.txt", "*.model",
                   "chat_template*")


def files_fingerprint(files: Iterable[Path]) -> str:
    """A key that changes when any of these files changes: content hash of small files (configs, tokenizer),
    size + modification time of large ones (a rewritten weight file gets a new mtime)."""
    parts = {}
    for file in sorted(f for f in files if f.is_file()):
        stat = file.stat()
        parts[file.name] = file_sha256(file) if stat.st_size <= SMALL_FILE else f"{stat.st_size}:{stat.st_mtime_ns}"
    return cache_key(**parts)


def model_fingerprint(model_dir: str | Path) -> str:
    """Every file of a model directory (weights, config, tokenizer), not its sub-folders (checkpoints)."""
    return files_fingerprint(Path(model_dir).iterdir())


def tokenizer_fingerprint(tokenizer_dir: str | Path) -> str:
    """The tokenizer files of a model directory only: retrained weights keep tokenised data valid."""
    return files_fingerprint({f for pattern in TOKENIZER_FILES for f in Path(tokenizer_dir).glob(pattern)})


def cached_blocks(
    cache_dir: Path, build: Callable[[], Iterator[dict[str, list[int]]]], finish: Callable[[], dict]
) -> tuple[Dataset, dict]:
    """Load packed blocks from `cache_dir`, or build them (streamed to disk) and store `finish()` beside them.

    The Arrow file is memory-mapped, so datasets larger than RAM train; a second run skips tokenisation.
    """
    arrow, meta_path = cache_dir / "blocks.arrow", cache_dir / "meta.json"
    if not (arrow.is_file() and meta_path.is_file()):
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cache_dir / f"blocks.arrow.{os.getpid()}.tmp"
        try:
            with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as writer:
                rows: list[dict] = []
                for block in build():
                    rows.append(block)
                    if len(rows) == 1024:
                        writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=SCHEMA))
                        rows = []
                if rows:
                    writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=SCHEMA))
            meta = finish()
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, arrow)
        meta_path.write_text(json.dumps(meta, indent=2))
    return Dataset.from_file(str(arrow)), json.loads(meta_path.read_text())


class PackedCollator:
    """Stack blocks into a batch with per-example position ids; pad (a segment of its own) carries no loss.

    `one_row`: the blocks are laid end to end in a single row, for flash-attention, which only splits a row
    into its examples (varlen) when the batch has one row; SDPA/eager build the block mask for any batch.
    """

    def __init__(self, pad_token_id: int, one_row: bool = False):
        self.pad_token_id, self.one_row = pad_token_id, one_row

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[i, :n] = torch.tensor(row["input_ids"])
            labels[i, :n] = torch.tensor(row["labels"])
            segments = [*row["lengths"], width - n] if width > n else row["lengths"]
            position_ids[i] = torch.cat([torch.arange(length) for length in segments])
        batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
        return {k: v.reshape(1, -1) for k, v in batch.items()} if self.one_row else batch
