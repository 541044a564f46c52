"""Evaluation that streams and resumes: prompts read in windows, rows written as batches finish.

Memory is flat in the number of examples: one window of prompts (as arrays) and one batch of
log-probabilities at a time; each answer becomes its row (prediction, true-class probability) while its
batch is live. Rows are appended in input order (flush + fsync per batch) next to a settings sidecar, so
`--resume` continues a killed run from the rows on disk and ends with the file an uninterrupted run writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from omics.data.instructions import PromptEncoder, fit_prompt
from omics.errors import UserError
from omics.evaluate.generate import Backend, Generation
from omics.io import write_json

T = TypeVar("T")
SORT_WINDOW = 2048  # prompts length-sorted together; batches never span windows, so a resume redoes at most one


class PromptIds:
    """Prompt token ids as training made them: the chat parts of `prompt_text`, then training's shortening
    rule to `max_length` (None: no limit). Returns the ids and how they fit: whole, shortened or question_cut."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int | None):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.encoders: dict[str, PromptEncoder] = {}

    def __call__(self, question: str, system: str) -> tuple[np.ndarray, str]:
        if system not in self.encoders:
            self.encoders[system] = PromptEncoder(self.tokenizer, system)
        encode = self.encoders[system]
        if self.max_length is None:
            return np.asarray(encode([question])[0], dtype=np.int32), "whole"
        ids, fit = fit_prompt(question, encode, self.max_length)
        return np.asarray(ids, dtype=np.int32), fit


def stream_rows(
    backend: Backend, items: Iterable[T], prompt: Callable[[T], np.ndarray],
    finish: Callable[[T, Generation], dict], total: int | None = None,
) -> Iterator[list[dict]]:
    """Rows in input order, handed out after each batch (the ones that became ready), SORT_WINDOW at a time.

    Length-sorted batching needs the lengths up front: it sorts within a window, so memory holds one window
    of rows and one batch of log-probabilities (`finish` reads what it needs; the Generation is then dropped).
    """
    items = iter(items)
    with tqdm(total=total, desc="generate", unit="ex") as progress:
        while window := list(islice(items, SORT_WINDOW)):
            rows: list[dict | None] = [None] * len(window)
            ready = 0
            for batch in backend.stream([prompt(item) for item in window]):
                for i, generation in batch:
                    rows[i] = finish(window[i], generation)
                start = ready
                while ready < len(rows) and rows[ready] is not None:
                    ready += 1
                progress.update(len(batch))
                if ready > start:
                    yield rows[start:ready]


class ResultsLog:
    """A .jsonl of result rows appended batch by batch, and the settings it was written with (sidecar).

    `--resume` accepts it only for the same settings, drops a torn last line (a kill mid-write) and goes on
    after the last whole row; without `--resume` an existing log is refused unless `--overwrite`.
    """

    def __init__(self, path: Path, settings: dict[str, Any]):
        self.path, self.settings = Path(path), settings
        self.sidecar = self.path.with_suffix(".settings.json")

    def open(self, resume: bool, overwrite: bool) -> int:
        """Prepare for appending; return how many rows are already written (0 unless resuming)."""
        if resume and overwrite:
            raise UserError("--resume and --overwrite contradict each other; pick one")
        if not resume:
            if self.path.is_file() and self.path.stat().st_size and not overwrite:
                raise UserError(f"{self.path} holds results of an earlier run; pass --resume to continue it "
                                      "or --overwrite to start again.")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.sidecar, self.settings)
            self.path.write_bytes(b"")
            return 0
        if not (self.path.is_file() and self.sidecar.is_file()):
            raise UserError(f"--resume: no unfinished results at {self.path}; run without --resume")
        written = json.loads(self.sidecar.read_text(encoding="utf-8"))
        changed = [_change(key, written.get(key), value) for key, value in self.settings.items()
                   if written.get(key) != value]
        if changed:
            raise UserError(f"--resume: {self.path} was written with other settings ({'; '.join(changed)}). "
                             "Rerun with the original data file, model and settings, or --overwrite to start again.")
        return self._keep_whole_rows()

    def _keep_whole_rows(self) -> int:
        """Count the whole rows; cut a torn last line (no newline, or not JSON) off the file."""
        rows, good_end = 0, 0
        with self.path.open("rb") as handle:
            for raw in handle:
                try:
                    json.loads(raw)
                except ValueError:
                    if handle.read(1):  # a bad line with more after it is damage, not a kill
                        raise UserError(f"{self.path}:{rows + 1}: not a JSON line; the file was edited or "
                                         "damaged. Pass --overwrite to start again.") from None
                    break
                if not raw.endswith(b"\n"):
                    break
                rows, good_end = rows + 1, good_end + len(raw)
        os.truncate(self.path, good_end)
        return rows

    def append(self, rows: list[dict]) -> None:
        """Rows on disk before going on: a kill loses at most the batch being decoded."""
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            handle.flush()
            os.fsync(handle.fileno())

    def rows(self) -> Iterator[dict]:
        with self.path.open(encoding="utf-8") as handle:
            yield from (json.loads(line) for line in handle)


def _change(key: str, old: object, new: object) -> str:
    """`key: old -> new`, or the key alone when the values are too long to read (hashes, file lists)."""
    text = f"{key}: {old!r} -> {new!r}"
    return text if len(text) <= 80 else key


def restart_point(done: int) -> int:
    """Where a resumed stream starts: the beginning of the window the kill interrupted, so every batch is
    formed as in an uninterrupted run (same padding, same numbers); its rows already written are left out."""
    return done - done % SORT_WINDOW


def resumed(rows: Iterator[list[dict]], already: int) -> Iterator[list[dict]]:
    """The row lists of a stream that restarted `already` rows before the resume point, those rows left out."""
    for batch in rows:
        fresh = batch[already:]
        already = max(0, already - len(batch))
        if fresh:
            yield fresh
