"""Task registry: each task's type, paper metric and omics group (evaluation.md §2), plus the label
vocabularies and ranges that parsing and the Mixed Score need, gathered in one streaming pass over the
data so that a 3M-record file never has to sit in memory."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from omics.errors import UserError

TASK_TYPES = ("regression", "multi_regression", "binary", "multiclass", "multilabel")

# family (task id prefix) → (type, paper metric, omics group), from evaluation.md §2 and the paper.
FAMILIES: dict[str, tuple[str, str, str]] = {
    "emp": ("binary", "MCC", "DNA"),
    "pd": ("binary", "MCC", "DNA"),
    "cpd": ("binary", "MCC", "DNA"),
    "tf": ("binary", "MCC", "DNA"),
    "enhancer_activity": ("multi_regression", "PCC", "DNA"),
    "Isoform": ("regression", "R2", "RNA"),
    "NoncodingRNAFamily": ("multiclass", "accuracy", "RNA"),
    "Modification": ("multilabel", "macro_AUC", "RNA"),
    "MeanRibosomeLoading": ("regression", "R2", "RNA"),
    "ProgrammableRNASwitches": ("multi_regression", "mean_R2", "RNA"),
    "CRISPROnTarget": ("regression", "Spearman", "RNA"),
    "FunctionEC": ("multilabel", "Fmax", "protein"),
    "Stability": ("regression", "Spearman", "protein"),
    "Fluorescence": ("regression", "Spearman", "protein"),
    "Thermostability": ("regression", "Spearman", "protein"),
    "Solubility": ("binary", "accuracy", "protein"),
    "antibody_antigen": ("binary", "MCC", "multi-molecule"),
    "rna_protein_interaction": ("binary", "MCC", "multi-molecule"),
    "promoter_enhancer_interaction": ("binary", "MCC", "multi-molecule"),
    "sirnaEfficiency": ("regression", "mixed_score", "multi-molecule"),
}
_FAMILY_LOOKUP = {name.lower(): name for name in FAMILIES}
THRESHOLDS = {"sirnaEfficiency": 30.0}  # paper A.3.1: positive = remaining mRNA below 30 %
DEFAULT_METRIC = {
    "regression": "Spearman",
    "multi_regression": "PCC",  # mean Pearson over outputs, each also reported
    "binary": "MCC",
    "multiclass": "accuracy",
    "multilabel": "macro_AUC",
}
_TAG_GROUP = {"dna": "DNA", "rna": "RNA", "protein": "protein"}
_TAG = re.compile(r"<(dna|rna|protein)>", re.I)

POSITIVE_WORDS = frozenset({"true", "yes", "positive", "1", "1.0"})
NEGATIVE_WORDS = frozenset({"false", "no", "negative", "0", "0.0"})
_NEGATING_PREFIXES = ("non-", "non", "not ", "not-", "un", "in", "dis")
_DISTINCT_CAP = 3  # distinct numeric values kept: enough to tell 0/1 labels from a regression target


@dataclass
class TaskSpec:
    """What the evaluator knows of one task; JSON round-trips through to_dict/from_dict."""

    task: str
    family: str
    type: str
    paper_metric: str
    keys: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    label_range: tuple[float, float] | dict[str, tuple[float, float]] | None = None
    threshold: float | None = None
    omics_group: str = "unknown"

    def __post_init__(self) -> None:
        if self.type not in TASK_TYPES:
            raise UserError(f"task {self.task}: unknown type {self.type!r}, expected one of {TASK_TYPES}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(self.label_range, dict):
            d["label_range"] = {k: list(v) for k, v in self.label_range.items()}
        elif self.label_range is not None:
            d["label_range"] = list(self.label_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        d = dict(d)
        lr = d.get("label_range")
        if isinstance(lr, dict):
            d["label_range"] = {k: (float(v[0]), float(v[1])) for k, v in lr.items()}
        elif lr is not None:
            d["label_range"] = (float(lr[0]), float(lr[1]))
        return cls(**d)


def family_of(task: str) -> str:
    """`emp-H3` → `emp`: the family is the part of the task id before the first `-`."""
    return task.split("-", 1)[0]


def known_family(task: str) -> str | None:
    """The registry's spelling of the task's family, matched case-insensitively; None if not a known one."""
    return _FAMILY_LOOKUP.get(family_of(task).lower())


def label_spelling(label: Any) -> str:
    """One spelling per scalar label, as the JSON file would show it (`true`, `1`, `positive`)."""
    if isinstance(label, bool):
        return "true" if label else "false"
    if isinstance(label, int | float):
        return format(float(label), "g")
    return str(label)


def binary_mapping(spellings: Iterable[str]) -> dict[str, bool] | None:
    """Lower-cased spelling → True (positive) / False, or None when some spelling has no known polarity.

    Besides true/yes/positive/1 and their opposites, a pair like soluble/insoluble (one spelling is the
    other with a negating prefix) is accepted, the prefixed one being negative."""
    mapping: dict[str, bool] = {}
    rest: list[str] = []
    for spelling in {s.strip().lower() for s in spellings}:
        if spelling in POSITIVE_WORDS:
            mapping[spelling] = True
        elif spelling in NEGATIVE_WORDS:
            mapping[spelling] = False
        else:
            rest.append(spelling)
    if len(rest) == 2:
        short, long = sorted(rest, key=len)
        if any(long == prefix + short for prefix in _NEGATING_PREFIXES):
            mapping.update({short: True, long: False})
            rest = []
    return mapping if mapping and not rest else None


def _as_float(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _label_kind(label: Any) -> str:
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


# Kinds that may share a task: scalars (binary labels written as bools, words or 0/1), objects, lists
# with comma-joined strings. Finer checks (do the words have a polarity?) happen in build_task_specs.
_COMPATIBLE = ({"number", "bool", "string"}, {"dict"}, {"list", "string"})


class LabelSummary:
    """Running summary of one task's labels, in memory O(classes + keys) whatever the number of records."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.n = 0
        self.kinds: dict[str, int] = {}
        self.lo: float | None = None
        self.hi: float | None = None
        self.values: list[float] = []  # up to _DISTINCT_CAP distinct numbers
        self.keys: list[str] | None = None
        self.key_ranges: dict[str, list[float]] = {}
        self.classes: dict[str, int] = {}  # scalar spellings (strings, bools)
        self.items: dict[str, int] = {}  # elements of list labels
        self.tags: set[str] = set()

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

    def add(self, label: Any, text: str = "") -> None:
        """Count one record's label; `text` (the question) tells which sequence kinds the task uses.

        All checks run before anything is counted, so a rejected label leaves the summary unchanged."""
        kind = _label_kind(label)
        if kind == "number":
            value = self._number(label)
        elif kind == "dict":
            keys = [str(k) for k in label]
            if self.keys is not None and set(keys) != set(self.keys):
                raise UserError(f"task {self.task}: label keys {keys} differ from earlier labels' {self.keys}")
            if any(_label_kind(v) != "number" for v in label.values()):
                raise UserError(f"task {self.task}: label {label!r} has an output that is not a number")
            outputs = {key: self._number(v) for key, v in zip(keys, label.values(), strict=True)}
        self._add_kind(kind)
        self.n += 1
        self.tags.update(t.lower() for t in _TAG.findall(text))
        if kind == "number":
            self._add_range(value, value)
            if value not in self.values and len(self.values) < _DISTINCT_CAP:
                self.values.append(value)
        elif kind == "dict":
            self._add_keys(keys)
            for key, value in outputs.items():
                self._add_range(value, value, key)
        elif kind == "list":
            for item in label:
                self.items[str(item)] = self.items.get(str(item), 0) + 1
        else:
            spelling = label_spelling(label)
            self.classes[spelling] = self.classes.get(spelling, 0) + 1

    def merge(self, other: LabelSummary) -> LabelSummary:
        """A new summary of both label streams (e.g. training and evaluation files)."""
        out = LabelSummary.from_dict(self.task, self.to_dict())
        for kind, count in other.kinds.items():
            out._add_kind(kind, count)
        out.n += other.n
        if other.lo is not None and other.hi is not None:
            out._add_range(other.lo, other.hi)
        for value in other.values:
            if value not in out.values and len(out.values) < _DISTINCT_CAP:
                out.values.append(value)
        if other.keys is not None:
            out._add_keys(other.keys)
        for key, (lo, hi) in other.key_ranges.items():
            out._add_range(lo, hi, key)
        for name, count in other.classes.items():
            out.classes[name] = out.classes.get(name, 0) + count
        for name, count in other.items.items():
            out.items[name] = out.items.get(name, 0) + count
        out.tags |= other.tags
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "kinds": dict(self.kinds),
            "min": self.lo,
            "max": self.hi,
            "values": list(self.values),
            "keys": None if self.keys is None else list(self.keys),
            "key_ranges": {k: list(v) for k, v in self.key_ranges.items()},
            "classes": dict(self.classes),
            "items": dict(self.items),
            "tags": sorted(self.tags),
        }

    @classmethod
    def from_dict(cls, task: str, d: dict[str, Any]) -> LabelSummary:
        s = cls(task)
        s.n, s.kinds, s.lo, s.hi = d["n"], dict(d["kinds"]), d["min"], d["max"]
        s.values = list(d["values"])
        s.keys = None if d["keys"] is None else list(d["keys"])
        s.key_ranges = {k: list(v) for k, v in d["key_ranges"].items()}
        s.classes, s.items, s.tags = dict(d["classes"]), dict(d["items"]), set(d["tags"])
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
            summary.add(record["label"], str(record.get("input", "")))
        except ValueError as err:
            raise UserError(f"task {task}: {err}" if task not in str(err) else str(err)) from err
    return {task: summaries[task].to_dict() for task in sorted(summaries)}


def _spellings(s: LabelSummary) -> list[str]:
    """Every scalar spelling of a task's labels, numbers included (at most _DISTINCT_CAP of them)."""
    return sorted(set(s.classes) | {label_spelling(v) for v in s.values})


def _multilabel_classes(s: LabelSummary) -> list[str]:
    names = set(s.items)
    for joined in s.classes:
        names.update(part.strip() for part in re.split(r"[,;]", joined) if part.strip())
    return sorted(names)


def _infer_type(s: LabelSummary) -> str:
    """Type of an unknown family's task from its labels (evaluation.md §2), see build_task_specs."""
    kinds = set(s.kinds)
    if kinds == {"dict"}:
        return "multi_regression"
    if "list" in kinds or (kinds == {"string"} and any("," in c for c in s.classes)):
        return "multilabel"
    if kinds == {"number"}:
        is_01 = len(s.values) == 2 and set(s.values) == {0.0, 1.0}
        return "binary" if is_01 else "regression"
    if binary_mapping(_spellings(s)) is not None:
        return "binary"
    if kinds == {"string"}:
        return "multiclass"
    raise UserError(f"task {s.task}: labels mix types {sorted(kinds)} that are not one binary vocabulary")


def _check_family_type(s: LabelSummary, type_: str) -> str:
    """The family's type, once the labels are seen to fit it (a binary family with two words of no
    known polarity falls back to multiclass: same accuracy and MCC, no positive class needed)."""
    kinds = set(s.kinds)
    fits = {
        "regression": kinds == {"number"},
        "multi_regression": kinds == {"dict"},
        "multiclass": kinds == {"string"},
        "multilabel": kinds <= {"list", "string"},
        "binary": kinds <= {"number", "bool", "string"},
    }[type_]
    if not fits:
        raise UserError(f"task {s.task}: {type_} family but labels are of kinds {sorted(kinds)}")
    if type_ == "binary" and binary_mapping(_spellings(s)) is None:
        if kinds == {"string"}:
            return "multiclass"
        raise UserError(f"task {s.task}: binary labels {_spellings(s)} have no positive/negative reading")
    return type_


def _omics_group(tags: set[str]) -> str:
    groups = {_TAG_GROUP[t] for t in tags}
    if not groups:
        return "unknown"
    return groups.pop() if len(groups) == 1 else "multi-molecule"


def _range(s: LabelSummary) -> tuple[float, float] | dict[str, tuple[float, float]] | None:
    if s.keys is not None:
        return {k: (float(s.key_ranges[k][0]), float(s.key_ranges[k][1])) for k in s.keys}
    if s.lo is None or s.hi is None:
        return None
    return (float(s.lo), float(s.hi))


def build_task_specs(
    summary: dict[str, Any], eval_summary: dict[str, Any] | None = None
) -> dict[str, TaskSpec]:
    """TaskSpecs for every task in either summary.

    `summary` is the training file's summary when there is one (else the evaluation file's), and
    `eval_summary` the evaluation file's: label ranges come from `summary` where it has the task, else
    from `eval_summary`; class vocabularies are the union of both so that parsing knows every name.
    Unknown families: numbers → regression (only 0 and 1 → binary), objects of numbers →
    multi_regression, lists or comma-joined strings → multilabel, spellings that all have a
    positive/negative reading (bools, yes/no, soluble/insoluble…) → binary, other strings → multiclass.
    """
    eval_summary = eval_summary or {}
    specs: dict[str, TaskSpec] = {}
    for task in sorted(set(summary) | set(eval_summary)):
        parts = [LabelSummary.from_dict(task, d[task]) for d in (summary, eval_summary) if task in d]
        primary, merged = parts[0], parts[0]
        for extra in parts[1:]:
            merged = merged.merge(extra)
        family = known_family(task)
        if family is not None:
            type_, metric, group = FAMILIES[family]
            type_ = _check_family_type(merged, type_)
        else:
            type_ = _infer_type(merged)
            metric, group = DEFAULT_METRIC[type_], _omics_group(merged.tags)
        if type_ == "multiclass":
            classes = sorted(merged.classes)
        elif type_ == "multilabel":
            classes = _multilabel_classes(merged)
        elif type_ == "binary":
            classes = _spellings(merged)
        else:
            classes = []
        numeric = type_ in ("regression", "multi_regression")
        specs[task] = TaskSpec(
            task=task,
            family=family_of(task),
            type=type_,
            paper_metric=metric,
            keys=list(primary.keys or []) if type_ == "multi_regression" else [],
            classes=classes,
            label_range=_range(primary) if numeric else None,
            threshold=THRESHOLDS.get(family) if family is not None else None,
            omics_group=group,
        )
    return specs
