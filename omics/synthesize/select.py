"""Which Stage 2 lines a synthesis asks about, each keyed by a hash of its normalised JSON (so a rerun knows which
are done, whatever order they finished in): every valid line, or a stratified sample of each task."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice, zip_longest
from pathlib import Path

from omics.data.validate import DataReport, read_instructions

KEY_FIELDS = ("input", "output", "label", "task")
DUPLICATE = "duplicate of an earlier line (asked once)"


def record_key(record: dict) -> str:
    """The same line, however its JSON was spaced or its keys ordered, gets the same key."""
    text = json.dumps({k: record[k] for k in KEY_FIELDS}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def distinct(records: Iterable[dict], report: DataReport) -> Iterator[dict]:
    """Each line once, with its key; repeats are reported as skipped."""
    seen: set[str] = set()
    for record in records:
        record["key"] = record_key(record)
        if record["key"] in seen:
            report.drop(record["line"], DUPLICATE, record["task"])
            continue
        seen.add(record["key"])
        yield record


def stratified(records: Iterable[dict], per_task: int, seed: int) -> list[dict]:
    """`per_task` lines of each task drawn uniformly in one pass (a reservoir per task, each with its own seeded
    generator), then interleaved task by task, so that a --limit prefix stays balanced across tasks."""
    reservoirs: dict[str, list[dict]] = {}
    seen: Counter = Counter()
    rngs: dict[str, random.Random] = {}
    for record in records:
        task = record["task"]
        reservoir, rng = reservoirs.setdefault(task, []), rngs.setdefault(task, random.Random(f"{seed}:{task}"))
        if seen[task] < per_task:
            reservoir.append(record)
        elif (slot := rng.randrange(seen[task] + 1)) < per_task:
            reservoir[slot] = record
        seen[task] += 1
    by_task = [sorted(reservoir, key=lambda r: r["line"]) for _, reservoir in sorted(reservoirs.items())]
    return [record for rank in zip_longest(*by_task) for record in rank if record is not None]


@dataclass
class Selection:
    """The lines to ask about: `records()` yields them (again on each call), `requested` counts them per task."""

    records: Callable[[], Iterator[dict]]
    requested: Counter
    report: DataReport

    @property
    def total(self) -> int:
        return sum(self.requested.values())


def select(path: Path, per_task: int | None, limit: int | None, seed: int) -> Selection:
    """Every valid line in file order (streamed, never held), or `per_task` of each task (held: a few thousand);
    `limit` keeps the first N of either, so raising it later continues the same selection."""
    report = DataReport(str(path))
    lines = distinct(read_instructions(path, report), report)
    if per_task is not None:
        chosen = stratified(lines, per_task, seed)[:limit]
        return Selection(lambda: iter(chosen), Counter(r["task"] for r in chosen), report)
    requested = Counter(r["task"] for r in islice(lines, limit))
    for _ in lines:  # the rest is still read: its bad lines are reported
        pass

    def records() -> Iterator[dict]:
        quiet = DataReport(str(path))
        return islice(distinct(read_instructions(path, quiet), quiet), limit)

    return Selection(records, requested, report)
