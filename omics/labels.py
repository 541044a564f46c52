"""What a task's labels are: one spelling per label, multi-label items, and the running label summary of each
task (kinds, ranges, classes, the words its reference answers use), gathered in one streaming pass so that a
3M-record file never has to sit in memory. Training writes these summaries; the task types read them."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from omics.answers import EC_NUMBER, parse_numbers
from omics.errors import UserError

_TAG = re.compile(r"<(dna|rna|protein)>", re.I)
_WORD = re.compile(r"[a-z]+(?:['\u2019-][a-z]+)*")

_DISTINCT_CAP = 3  # distinct numeric values kept: enough to tell 0/1 labels from a regression target


def label_spelling(label: Any) -> str:
    """One spelling per scalar label, as the JSON file would show it (`true`, `1`, `positive`)."""
    if isinstance(label, bool):
        return "true" if label else "false"
    if isinstance(label, int | float):
        return format(float(label), "g")
    return str(label)


def label_items(label: Any, ec_numbers: bool = False) -> list[str]:
    """A multi-label label as a sorted list of names: a list, or a comma/semicolon-joined string; for EC
    tasks the EC numbers it contains (`EC 2.7.11.1`, lists, comma strings)."""
    items = [str(x) for x in label] if isinstance(label, list | tuple) else re.split(r"[,;]", str(label))
    if ec_numbers:
        return sorted({ec for item in items for ec in EC_NUMBER.findall(item)})
    return sorted({item.strip() for item in items if item.strip()})


def _as_float(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def label_kind(label: Any) -> str:
    """number, bool, string, dict or list: the kinds a task's labels may mix (see _COMPATIBLE)."""
    if isinstance(label, bool):
        return "bool"
    if isinstance(label, int | float):
        return "number"
    if isinstance(label, str):
        return "number" if _as_float(label) is not None else "string"
    if isinstance(label, dict):
        return "dict"
    if isinstance(label, list | tuple):
        return "list"
    raise UserError(f"unsupported label type {type(label).__name__}: {label!r}")


def _stated_order(outputs: dict[str, float], text: str) -> str | None:
    """The keys in the order a reference output states their values ("hk,dev"): each number in the text
    is matched to the closest label value; None unless that gives every key exactly once."""
    numbers = parse_numbers(text)
    if len(numbers) != len(outputs):
        return None
    order = [min(outputs, key=lambda k, x=x: abs(outputs[k] - x)) for x in numbers]
    return ",".join(order) if len(set(order)) == len(order) else None


def _add_counts(into: dict[str, int], other: dict[str, int]) -> None:
    for key, count in other.items():
        into[key] = into.get(key, 0) + count


# Kinds that may share a task: scalars (binary labels written as bools, words or 0/1), objects, lists
# with comma-joined strings. Finer checks (do the words have a polarity?) happen in omics.tasktypes.recognise.
_COMPATIBLE = ({"number", "bool", "string"}, {"dict"}, {"list", "string"})


class LabelSummary:
    """Running summary of one task's labels (and of the words its reference outputs use), in memory
    O(classes + keys + words) whatever the number of records."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.n = 0
        self.kinds: dict[str, int] = {}
        self.lo: float | None = None
        self.hi: float | None = None
        self.total: float | None = 0.0  # sum of numeric labels (the baseline's mean); None: not recorded
        self.numbers: dict[str, int] = {}  # spelling → count, for up to _DISTINCT_CAP distinct numbers
        self.keys: list[str] | None = None
        self.key_ranges: dict[str, list[float]] = {}
        self.key_totals: dict[str, float] = {}
        self.key_orders: dict[str, int] = {}  # "hk,dev" → reference outputs stating the values in that order
        self.classes: dict[str, int] = {}  # scalar spellings (strings, bools)
        self.items: dict[str, int] = {}  # elements of list labels
        self.sets: dict[str, int] = {}  # list labels: comma-joined sorted set → count
        self.tags: set[str] = set()
        # scalar spelling → word → reference outputs using it; None once a third spelling shows the task
        # is not binary
        self.words: dict[str, dict[str, int]] | None = {}
        self.outputs: dict[str, int] = {}

    def _number(self, label: Any) -> float:
        value = float(label)
        if not math.isfinite(value):
            raise UserError(f"task {self.task}: label {label!r} is not a finite number")
        return value

    def _add_kind(self, kind: str, count: int = 1) -> None:
        kinds = {**self.kinds, kind: self.kinds.get(kind, 0) + count}
        if not any(set(kinds) <= group for group in _COMPATIBLE):
            raise UserError(f"task {self.task}: labels mix incompatible types {sorted(kinds)}")
        self.kinds = kinds

    def _add_range(self, lo: float, hi: float, key: str | None = None) -> None:
        if key is None:
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)
        else:
            old = self.key_ranges.get(key)
            self.key_ranges[key] = [lo, hi] if old is None else [min(old[0], lo), max(old[1], hi)]

    def _add_keys(self, keys: list[str]) -> None:
        if self.keys is None:
            self.keys = keys
        elif set(keys) != set(self.keys):
            raise UserError(f"task {self.task}: label keys {keys} differ from earlier labels' {self.keys}")

    def _add_numbers(self, counts: dict[str, int]) -> None:
        for spelling, count in counts.items():
            if spelling in self.numbers or len(self.numbers) < _DISTINCT_CAP:
                self.numbers[spelling] = self.numbers.get(spelling, 0) + count

    def _add_words(self, words: dict[str, dict[str, int]] | None, outputs: dict[str, int]) -> None:
        if self.words is None or words is None or len(set(self.words) | set(words)) > 2:
            self.words = None
            return
        for spelling, counts in words.items():
            _add_counts(self.words.setdefault(spelling, {}), counts)
        _add_counts(self.outputs, outputs)

    def add(self, label: Any, text: str = "", output: str = "") -> None:
        """Count one record's label; `text` (the question) tells which sequence kinds the task uses, `output`
        (the reference answer) which words and which order of numbers its answers use.

        All checks run before anything is counted, so a rejected label leaves the summary unchanged."""
        kind = label_kind(label)
        if kind == "number":
            value = self._number(label)
        elif kind == "dict":
            keys = [str(k) for k in label]
            if self.keys is not None and set(keys) != set(self.keys):
                raise UserError(f"task {self.task}: label keys {keys} differ from earlier labels' {self.keys}")
            if any(label_kind(v) != "number" for v in label.values()):
                raise UserError(f"task {self.task}: label {label!r} has an output that is not a number")
            outputs = {key: self._number(v) for key, v in zip(keys, label.values(), strict=True)}
        self._add_kind(kind)
        self.n += 1
        self.tags.update(t.lower() for t in _TAG.findall(text))
        if kind == "number":
            self._add_range(value, value)
            self.total = None if self.total is None else self.total + value
            self._add_numbers({label_spelling(value): 1})
        elif kind == "dict":
            self._add_keys(keys)
            for key, value in outputs.items():
                self._add_range(value, value, key)
                self.key_totals[key] = self.key_totals.get(key, 0.0) + value
            order = _stated_order(outputs, output) if output else None
            if order is not None:
                self.key_orders[order] = self.key_orders.get(order, 0) + 1
        elif kind == "list":
            for item in label:
                self.items[str(item)] = self.items.get(str(item), 0) + 1
            joined = ",".join(sorted({str(item) for item in label}))
            self.sets[joined] = self.sets.get(joined, 0) + 1
        else:
            spelling = label_spelling(label)
            self.classes[spelling] = self.classes.get(spelling, 0) + 1
        if kind in ("number", "bool", "string") and output and self.words is not None:
            self._add_output_words(label_spelling(value if kind == "number" else label), output)

    def _add_output_words(self, spelling: str, output: str) -> None:
        counts = self.words.get(spelling) if self.words is not None else None
        if counts is None:
            if self.words is None or len(self.words) == 2:
                self.words = None
                return
            counts = self.words[spelling] = {}
        for word in set(_WORD.findall(output.lower())):
            counts[word] = counts.get(word, 0) + 1
        self.outputs[spelling] = self.outputs.get(spelling, 0) + 1

    def merge(self, other: LabelSummary) -> LabelSummary:
        """A new summary of both label streams (e.g. training and evaluation files)."""
        out = LabelSummary.from_dict(self.task, self.to_dict())
        for kind, count in other.kinds.items():
            out._add_kind(kind, count)
        out.n += other.n
        if other.lo is not None and other.hi is not None:
            out._add_range(other.lo, other.hi)
        out.total = None if out.total is None or other.total is None else out.total + other.total
        out._add_numbers(other.numbers)
        if other.keys is not None:
            out._add_keys(other.keys)
        for key, (lo, hi) in other.key_ranges.items():
            out._add_range(lo, hi, key)
        for key, total in other.key_totals.items():
            out.key_totals[key] = out.key_totals.get(key, 0.0) + total
        for counts, more in ((out.key_orders, other.key_orders), (out.classes, other.classes),
                             (out.items, other.items), (out.sets, other.sets)):
            _add_counts(counts, more)
        out.tags |= other.tags
        out._add_words(other.words, other.outputs)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "kinds": dict(self.kinds),
            "min": self.lo,
            "max": self.hi,
            "total": self.total,
            "numbers": dict(self.numbers),
            "keys": None if self.keys is None else list(self.keys),
            "key_ranges": {k: list(v) for k, v in self.key_ranges.items()},
            "key_totals": dict(self.key_totals),
            "key_orders": dict(self.key_orders),
            "classes": dict(self.classes),
            "items": dict(self.items),
            "sets": dict(self.sets),
            "tags": sorted(self.tags),
            "words": None if self.words is None else {k: dict(v) for k, v in self.words.items()},
            "outputs": dict(self.outputs),
        }

    @classmethod
    def from_dict(cls, task: str, d: dict[str, Any]) -> LabelSummary:
        """Also reads summaries saved before revision 2 (no totals, orders, sets or words: baselines then
        come from the evaluation file)."""
        s = cls(task)
        s.n, s.kinds, s.lo, s.hi = d["n"], dict(d["kinds"]), d["min"], d["max"]
        s.total = d.get("total")
        s.numbers = dict(d.get("numbers") or {label_spelling(v): 0 for v in d.get("values", [])})
        s.keys = None if d["keys"] is None else list(d["keys"])
        s.key_ranges = {k: list(v) for k, v in d["key_ranges"].items()}
        s.key_totals, s.key_orders = dict(d.get("key_totals", {})), dict(d.get("key_orders", {}))
        s.classes, s.items, s.tags = dict(d["classes"]), dict(d["items"]), set(d["tags"])
        s.sets = dict(d.get("sets", {}))
        words = d.get("words", {})
        s.words = None if words is None else {k: dict(v) for k, v in words.items()}
        s.outputs = dict(d.get("outputs", {}))
        return s


def summarize_records(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """task → label summary (JSON-serialisable), streaming over records {input, output, label, task}."""
    summaries: dict[str, LabelSummary] = {}
    for i, record in enumerate(records):
        if "task" not in record or "label" not in record:
            raise UserError(f"record {i} lacks a 'task' or 'label' field")
        task = str(record["task"])
        summary = summaries.setdefault(task, LabelSummary(task))
        try:
            summary.add(record["label"], str(record.get("input") or ""), str(record.get("output") or ""))
        except ValueError as err:
            raise UserError(f"task {task}: {err}" if task not in str(err) else str(err)) from err
    return {task: summaries[task].to_dict() for task in sorted(summaries)}
