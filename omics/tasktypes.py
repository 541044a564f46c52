"""Task types: one object per type (regression, multi_regression, binary, multiclass, multilabel) that knows how
to recognise its labels in a label summary, describe the task from them (classes, keys, range, baseline),
normalize a label, parse a prediction from text and score the task. `TaskSpec` holds its type; the type's name
is only what files store (metrics.json, predictions, data reports).

Torch-free and below the data layer: training checks its labels with these types, evaluation scores with them.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

from omics.answers import (
    NEGATIVE_WORDS,
    POSITIVE_WORDS,
    binary_mapping,
    is_valid_number,
    parse_binary,
    parse_class,
    parse_labels,
    parse_number,
    parse_numbers,
)
from omics.errors import UserError
from omics.families import EC_FAMILY, FAMILIES, FIXED_KEYS
from omics.labels import LabelSummary, label_items, label_spelling
from omics.scores import score_multilabel, score_regression, score_single_label

CLASS_WORD_SHARE = 0.01  # a class word occurs in at least 1% of its label's reference outputs
Range = tuple[float, float] | dict[str, tuple[float, float]]


@dataclass
class TaskSpec:
    """What the evaluator knows of one task; JSON round-trips through to_dict/from_dict.

    `type` is the task type's name (`task_type` is the object); `positive_words`/`negative_words` (binary) are
    the words the task's reference outputs use for one label and never for the other; `baseline` is the
    constant prediction of §4 in normalized form."""

    task: str
    family: str
    type: str
    paper_metric: str
    keys: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    label_range: Range | None = None
    threshold: float | None = None
    omics_group: str = "unknown"
    positive_words: list[str] = field(default_factory=list)
    negative_words: list[str] = field(default_factory=list)
    baseline: Any = None

    def __post_init__(self) -> None:
        if self.type not in TASK_TYPES:
            raise UserError(f"task {self.task}: unknown type {self.type!r}, expected one of {tuple(TASK_TYPES)}")

    @property
    def task_type(self) -> TaskType:
        return TASK_TYPES[self.type]

    @property
    def ec_numbers(self) -> bool:
        """FunctionEC: labels and answers are EC numbers, not class names."""
        return self.family == EC_FAMILY

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


def _spellings(s: LabelSummary) -> list[str]:
    """Every scalar spelling of a task's labels, numbers included (at most _DISTINCT_CAP of them)."""
    return sorted(set(s.classes) | set(s.numbers))


def _majority(counts: dict[str, int]) -> str | None:
    return max(sorted(counts), key=counts.__getitem__) if counts else None


def _range(s: LabelSummary, keys: list[str]) -> Range | None:
    """The labels' range: per output key, or of the scalar labels."""
    if keys:
        return {k: (float(s.key_ranges[k][0]), float(s.key_ranges[k][1])) for k in keys}
    if s.lo is None or s.hi is None:
        return None
    return (float(s.lo), float(s.hi))


def _label_float(label: Any, spec: TaskSpec) -> float:
    value = float(label) if not isinstance(label, bool) else math.nan
    if not math.isfinite(value):
        raise UserError(f"task {spec.task}: label {label!r} is not a finite number")
    return value


class TaskType(ABC):
    """What every task type answers; each subclass below is one type. `kinds` are the label kinds it accepts."""

    name: str
    default_metric: str  # the paper metric of an unknown family's task of this type
    kinds: frozenset[str]
    reads_probability = False  # the Mixed Score can use the model's p(true class) read at a class word

    def __str__(self) -> str:
        return self.name

    def fits(self, kinds: set[str]) -> bool:
        """May a task of this type have labels of these kinds?"""
        return kinds <= self.kinds

    def claims(self, s: LabelSummary) -> bool:
        """Are these labels, of an unknown family, this type's (asked in INFERENCE_ORDER)?"""
        return self.fits(set(s.kinds))

    def checked(self, s: LabelSummary, family: str) -> TaskType:
        """The type a known family of this type gets, once its labels are seen to fit (else a UserError)."""
        if not self.fits(set(s.kinds)):
            raise UserError(f"task {s.task}: {self.name} family but labels are of kinds {sorted(s.kinds)}")
        return self

    @abstractmethod
    def describe(self, s: LabelSummary, family: str | None) -> dict[str, Any]:
        """The TaskSpec fields that come from the labels: keys, classes, label range, class words."""

    @abstractmethod
    def baseline(self, s: LabelSummary, spec_fields: dict[str, Any], family: str | None) -> Any:
        """The constant predictor of §4 in normalized form; None when these labels do not give one."""

    @abstractmethod
    def normalize(self, label: Any, spec: TaskSpec) -> Any:
        """A data label in the representation `parse` returns for the same task."""

    @abstractmethod
    def is_normalized(self, label: Any, spec: TaskSpec) -> bool:
        """Is this label already in `normalize`'s representation (what scoring requires)?"""

    @abstractmethod
    def parse(self, text: str, spec: TaskSpec) -> Any:
        """The prediction in `text`, or None when it cannot be read as one (invalid)."""

    @abstractmethod
    def score(self, spec: TaskSpec, labels: list, predictions: list, probabilities: list[float] | None) -> dict:
        """The type's own scores of the task (paper metric, Mixed Score, diagnostics), see omics.scores."""

    def class_words(self, spec: TaskSpec) -> dict[str, object]:
        """Class spelling, as in the data → the prediction value it stands for (for reading p(true class))."""
        return {}


class Regression(TaskType):
    """One number per label: float predictions (the first number in the answer)."""

    name, default_metric, kinds = "regression", "Spearman", frozenset({"number"})

    def fits(self, kinds: set[str]) -> bool:
        return kinds == self.kinds

    def describe(self, s: LabelSummary, family: str | None) -> dict[str, Any]:
        return {"label_range": _range(s, [])}

    def baseline(self, s: LabelSummary, spec_fields: dict[str, Any], family: str | None) -> Any:
        if s.n == 0 or (s.total is None and not s.key_totals):
            return None
        return s.total / s.n

    def normalize(self, label: Any, spec: TaskSpec) -> float:
        return _label_float(label, spec)

    def is_normalized(self, label: Any, spec: TaskSpec) -> bool:
        return isinstance(label, int | float) and not isinstance(label, bool) and math.isfinite(label)

    def parse(self, text: str, spec: TaskSpec) -> float | None:
        value = parse_number(text)
        return value if is_valid_number(value) else None

    def score(self, spec: TaskSpec, labels: list, predictions: list, probabilities: list[float] | None) -> dict:
        return score_regression(spec, labels, predictions, multi=False)


class MultiRegression(TaskType):
    """An object of numbers per label: {key: float} predictions, from exactly len(keys) numbers in keys order."""

    name, default_metric, kinds = "multi_regression", "PCC", frozenset({"dict"})  # PCC: mean Pearson over outputs

    def fits(self, kinds: set[str]) -> bool:
        return kinds == self.kinds

    def checked(self, s: LabelSummary, family: str) -> TaskType:
        super().checked(s, family)
        keys = FIXED_KEYS.get(family)
        if keys is not None and set(keys) != set(s.keys or []):
            raise UserError(f"task {s.task}: {family} labels need the keys {keys}, got {s.keys}")
        return self

    def describe(self, s: LabelSummary, family: str | None) -> dict[str, Any]:
        """Fixed key order for the paper's multi-output tasks, else the order most reference outputs state the
        values in, else the first label's key order."""
        if family in FIXED_KEYS:
            keys = list(FIXED_KEYS[family])
        elif s.key_orders:
            keys = max(sorted(s.key_orders), key=s.key_orders.__getitem__).split(",")
        else:
            keys = list(s.keys or [])
        return {"keys": keys, "label_range": _range(s, keys)}

    def baseline(self, s: LabelSummary, spec_fields: dict[str, Any], family: str | None) -> Any:
        keys = spec_fields["keys"]
        if s.n == 0 or (s.total is None and not s.key_totals):
            return None
        return {k: s.key_totals[k] / s.n for k in keys} if set(keys) <= set(s.key_totals) else None

    def normalize(self, label: Any, spec: TaskSpec) -> dict[str, float]:
        if not isinstance(label, dict) or set(label) != set(spec.keys):
            raise UserError(f"task {spec.task}: label {label!r} does not have the keys {spec.keys}")
        return {k: _label_float(label[k], spec) for k in spec.keys}

    def is_normalized(self, label: Any, spec: TaskSpec) -> bool:
        return isinstance(label, dict) and set(label) >= set(spec.keys)

    def parse(self, text: str, spec: TaskSpec) -> dict[str, float] | None:
        values = parse_numbers(text)
        if len(values) != len(spec.keys) or not all(is_valid_number(v) for v in values):
            return None
        return dict(zip(spec.keys, values, strict=True))

    def score(self, spec: TaskSpec, labels: list, predictions: list, probabilities: list[float] | None) -> dict:
        return score_regression(spec, labels, predictions, multi=True)


class Binary(TaskType):
    """Two labels with a polarity (true/false, yes/no, 0/1, soluble/insoluble): bool predictions."""

    name, default_metric, kinds = "binary", "MCC", frozenset({"number", "bool", "string"})
    reads_probability = True

    def claims(self, s: LabelSummary) -> bool:
        if set(s.kinds) == {"number"}:
            return len(s.numbers) == 2 and {float(v) for v in s.numbers} == {0.0, 1.0}
        return binary_mapping(_spellings(s)) is not None

    def checked(self, s: LabelSummary, family: str) -> TaskType:
        """A binary family with two words of no known polarity falls back to multiclass: same accuracy and
        MCC, no positive class needed."""
        super().checked(s, family)
        if binary_mapping(_spellings(s)) is None:
            if set(s.kinds) == {"string"}:
                return MULTICLASS
            raise UserError(f"task {s.task}: binary labels {_spellings(s)} have no positive/negative reading")
        return self

    def describe(self, s: LabelSummary, family: str | None) -> dict[str, Any]:
        """The spellings as classes, and the words reference outputs use for one label and never for the other
        (in ≥ 1% of that label's)."""
        classes = _spellings(s)
        mapping = binary_mapping(classes) or {}
        words: dict[bool, list[str]] = {True: [], False: []}
        by_polarity = {mapping.get(sp.strip().lower()): sp for sp in s.words or {}}
        if s.words is not None and set(by_polarity) == {True, False}:
            for polarity, spelling in by_polarity.items():
                other = s.words[by_polarity[not polarity]]
                least = CLASS_WORD_SHARE * s.outputs.get(spelling, 0)
                words[polarity] = sorted(w for w, c in s.words[spelling].items() if w not in other and c >= least)
        return {"classes": classes, "positive_words": words[True], "negative_words": words[False]}

    def baseline(self, s: LabelSummary, spec_fields: dict[str, Any], family: str | None) -> Any:
        top = _majority({**s.classes, **s.numbers}) if s.n else None
        return None if top is None else (binary_mapping(_spellings(s)) or {}).get(top.strip().lower())

    def normalize(self, label: Any, spec: TaskSpec) -> bool:
        """True = positive/yes/true/1, or the un-prefixed spelling of a pair like soluble/insoluble."""
        mapping = {**{w: True for w in POSITIVE_WORDS}, **{w: False for w in NEGATIVE_WORDS}}
        mapping.update(binary_mapping(spec.classes) or {})
        value = mapping.get(label_spelling(label).strip().lower())
        if value is None:
            raise UserError(f"task {spec.task}: binary label {label!r} is neither positive nor negative")
        return value

    def is_normalized(self, label: Any, spec: TaskSpec) -> bool:
        return isinstance(label, bool)

    def parse(self, text: str, spec: TaskSpec) -> bool | None:
        return parse_binary(text, spec.classes, tuple(spec.negative_words), tuple(spec.positive_words))

    def score(self, spec: TaskSpec, labels: list, predictions: list, probabilities: list[float] | None) -> dict:
        return score_single_label(spec, labels, predictions, probabilities, binary=True)

    def class_words(self, spec: TaskSpec) -> dict[str, object]:
        return {word: value for word, value in (binary_mapping(spec.classes) or {}).items()
                if re.fullmatch(r"[A-Za-z][A-Za-z-]*", word)}


class Multiclass(TaskType):
    """One class name per label: str predictions (the longest known class name in the answer)."""

    name, default_metric, kinds = "multiclass", "accuracy", frozenset({"string"})
    reads_probability = True

    def fits(self, kinds: set[str]) -> bool:
        return kinds == self.kinds

    def describe(self, s: LabelSummary, family: str | None) -> dict[str, Any]:
        return {"classes": sorted(s.classes)}

    def baseline(self, s: LabelSummary, spec_fields: dict[str, Any], family: str | None) -> Any:
        top = _majority({**s.classes, **s.numbers}) if s.n else None
        return None if top is None else top.strip()

    def normalize(self, label: Any, spec: TaskSpec) -> str:
        return str(label).strip()

    def is_normalized(self, label: Any, spec: TaskSpec) -> bool:
        return isinstance(label, str)

    def parse(self, text: str, spec: TaskSpec) -> str | None:
        return parse_class(text, spec.classes)

    def score(self, spec: TaskSpec, labels: list, predictions: list, probabilities: list[float] | None) -> dict:
        return score_single_label(spec, labels, predictions, probabilities, binary=False)

    def class_words(self, spec: TaskSpec) -> dict[str, object]:
        return {name: name for name in spec.classes}


class Multilabel(TaskType):
    """A set of names per label (a list, or a comma/semicolon-joined string): sorted list[str] predictions."""

    name, default_metric, kinds = "multilabel", "macro_AUC", frozenset({"list", "string"})

    def claims(self, s: LabelSummary) -> bool:
        return "list" in s.kinds or (set(s.kinds) == {"string"} and any("," in c for c in s.classes))

    def describe(self, s: LabelSummary, family: str | None) -> dict[str, Any]:
        """Every name any label holds (for EC tasks the EC numbers), so parsing knows the whole vocabulary."""
        ec_numbers = family == EC_FAMILY
        names = set(label_items(list(s.items), ec_numbers))
        for joined in s.classes:
            names.update(label_items(joined, ec_numbers))
        return {"classes": sorted(names)}

    def baseline(self, s: LabelSummary, spec_fields: dict[str, Any], family: str | None) -> Any:
        """The most frequent label set."""
        sets: dict[str, int] = {}
        for joined, count in [*s.sets.items(), *s.classes.items()]:
            key = ",".join(label_items(joined, family == EC_FAMILY))
            sets[key] = sets.get(key, 0) + count
        top = _majority(sets) if s.n else None
        return None if top is None else [x for x in top.split(",") if x]

    def normalize(self, label: Any, spec: TaskSpec) -> list[str]:
        """Sorted names; a comma- or semicolon-joined string is split; FunctionEC: the EC numbers in it
        (`EC 2.7.11.1` → 2.7.11.1)."""
        return label_items(label, ec_numbers=spec.ec_numbers)

    def is_normalized(self, label: Any, spec: TaskSpec) -> bool:
        return isinstance(label, list | tuple | set)

    def parse(self, text: str, spec: TaskSpec) -> list[str] | None:
        return parse_labels(text, spec.classes, ec_numbers=spec.ec_numbers)

    def score(self, spec: TaskSpec, labels: list, predictions: list, probabilities: list[float] | None) -> dict:
        return score_multilabel(spec, labels, predictions, probabilities)


REGRESSION, MULTI_REGRESSION, BINARY, MULTICLASS, MULTILABEL = (
    Regression(), MultiRegression(), Binary(), Multiclass(), Multilabel())
TASK_TYPES: dict[str, TaskType] = {t.name: t for t in (REGRESSION, MULTI_REGRESSION, BINARY, MULTICLASS, MULTILABEL)}
# an unknown family's labels: objects of numbers → multi_regression, lists or comma-joined strings → multilabel,
# only 0 and 1 or spellings that all have a polarity → binary, other numbers → regression, other strings →
# multiclass (evaluation.md §2)
INFERENCE_ORDER = (MULTI_REGRESSION, MULTILABEL, BINARY, REGRESSION, MULTICLASS)


def recognise(s: LabelSummary, family: str | None) -> TaskType:
    """The task type these labels make: the known `family`'s type once the labels fit it, else the first type
    in INFERENCE_ORDER that claims them; a UserError saying why when none does."""
    if family is not None:
        return TASK_TYPES[FAMILIES[family][0]].checked(s, family)
    found = next((t for t in INFERENCE_ORDER if t.claims(s)), None)
    if found is None:
        raise UserError(f"task {s.task}: labels mix types {sorted(s.kinds)} that are not one binary vocabulary")
    return found
