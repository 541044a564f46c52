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
    "tf_h": ("binary", "MCC", "DNA"),
    "tf_m": ("binary", "MCC", "DNA"),
    "antibody_antigen": ("binary", "MCC", "multi-molecule"),
    "rna_protein_interaction": ("binary", "MCC", "multi-molecule"),
    "promoter_enhancer_interaction": ("binary", "MCC", "multi-molecule"),
    "enhancer_activity": ("multi_regression", "PCC", "DNA"),
    "Isoform": ("regression", "R2", "RNA"),
    "MeanRibosomeLoading": ("regression", "R2", "RNA"),
    "ProgrammableRNASwitches": ("multi_regression", "mean_R2", "RNA"),
    "CRISPROnTarget": ("regression", "Spearman", "RNA"),
    "Stability": ("regression", "Spearman", "protein"),
    "Fluorescence": ("regression", "Spearman", "protein"),
    "Thermostability": ("regression", "Spearman", "protein"),
    "NoncodingRNAFamily": ("multiclass", "accuracy", "RNA"),
    "Solubility": ("binary", "accuracy", "protein"),
    "Modification": ("multilabel", "macro_AUC", "RNA"),
    "FunctionEC": ("multilabel", "Fmax", "protein"),
    "sirnaEfficiency": ("regression", "mixed_score", "multi-molecule"),
}
_FAMILY_LOOKUP = {name.lower(): name for name in FAMILIES}
# the paper's evaluator renames these before cutting the family off, so tf-h-0 and tf-m-1 stay apart
_FAMILY_RENAMES = re.compile(r"^tf-([hm])", re.I)
THRESHOLDS = {"sirnaEfficiency": 30.0}  # paper A.3.1: positive = remaining mRNA below 30 %
# the paper's multi-output tasks state their numbers in this order, whatever a label's JSON key order
FIXED_KEYS = {"enhancer_activity": ["hk", "dev"], "ProgrammableRNASwitches": ["ON", "OFF", "ON_OFF"]}
EC_NUMBER = re.compile(r"(?<![\w.])\d+\.\d+\.\d+\.-?\d*")  # FunctionEC: in labels as in outputs
ALL_SUFFIX = "_all"  # task ids ending so repeat their parts: own row, left out of the paper table's pooling

# The paper table (evaluation.md §2): column → (family, output key of a multi-output family), in the
# contract's order, and the paper's own values (paper metric ×100; S12 = stages 1+2, S123 = all three).
PAPER_COLUMNS: dict[str, tuple[str, str | None]] = {
    **{f: (f, None) for f in ("emp", "pd", "cpd", "tf_h", "tf_m", "antibody_antigen", "rna_protein_interaction",
                              "promoter_enhancer_interaction")},
    "enhancer_activity_hk": ("enhancer_activity", "hk"),
    "enhancer_activity_dev": ("enhancer_activity", "dev"),
    **{f: (f, None) for f in ("Isoform", "MeanRibosomeLoading", "ProgrammableRNASwitches", "CRISPROnTarget",
                              "Stability", "Fluorescence", "Thermostability", "NoncodingRNAFamily", "Solubility",
                              "Modification", "FunctionEC", "sirnaEfficiency")},
}
PAPER_RESULTS: dict[str, tuple[float, float]] = {  # arXiv 2412.19191, test split (paper-recipe.md)
    "emp": (8.10, 3.64), "pd": (49.01, 58.18), "cpd": (41.18, 44.54), "tf_h": (19.07, 24.45),
    "tf_m": (27.94, 39.91), "antibody_antigen": (10.26, 1.06), "rna_protein_interaction": (70.80, 74.26),
    "promoter_enhancer_interaction": (1.68, 3.37), "enhancer_activity_hk": (59.74, 57.24),
    "enhancer_activity_dev": (46.82, 45.92), "Isoform": (50.68, 59.01), "MeanRibosomeLoading": (29.12, 47.64),
    "ProgrammableRNASwitches": (26.65, 26.57), "CRISPROnTarget": (-2.99, -0.02), "Stability": (56.76, 60.25),
    "Fluorescence": (1.49, 2.57), "Thermostability": (44.59, 45.07), "NoncodingRNAFamily": (62.77, 63.09),
    "Solubility": (62.07, 63.02), "Modification": (57.45, 59.06), "FunctionEC": (19.35, 19.79),
    "sirnaEfficiency": (56.31, 56.25),
}  # fmt: skip
DEFAULT_METRIC = {
    "regression": "Spearman",
    "multi_regression": "PCC",  # mean Pearson over outputs, each also reported
    "binary": "MCC",
    "multiclass": "accuracy",
    "multilabel": "macro_AUC",
}
_TAG_GROUP = {"dna": "DNA", "rna": "RNA", "protein": "protein"}
_TAG = re.compile(r"<(dna|rna|protein)>", re.I)
_WORD = re.compile(r"[a-z]+(?:['\u2019-][a-z]+)*")

POSITIVE_WORDS = frozenset({"true", "yes", "positive", "1", "1.0"})
NEGATIVE_WORDS = frozenset({"false", "no", "negative", "0", "0.0"})
_NEGATING_PREFIXES = ("non-", "non", "not ", "not-", "un", "in", "dis")
_DISTINCT_CAP = 3  # distinct numeric values kept: enough to tell 0/1 labels from a regression target
CLASS_WORD_SHARE = 0.01  # a class word occurs in at least 1% of its label's reference outputs


@dataclass
class TaskSpec:
    """What the evaluator knows of one task; JSON round-trips through to_dict/from_dict.

    `positive_words`/`negative_words` (binary) are the words the task's reference outputs use for one
    label and never for the other; `baseline` is the constant prediction of §4 in normalized form."""

    task: str
    family: str
    type: str
    paper_metric: str
    keys: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    label_range: tuple[float, float] | dict[str, tuple[float, float]] | None = None
    threshold: float | None = None
    omics_group: str = "unknown"
    positive_words: list[str] = field(default_factory=list)
    negative_words: list[str] = field(default_factory=list)
    baseline: Any = None

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
    """`emp-H3` → `emp`, `tf-h-0` → `tf_h`: the id before the first `-`, after the paper's tf-h/tf-m renames."""
    return _FAMILY_RENAMES.sub(lambda m: f"{m.group()[:2]}_{m.group(1)}", task).split("-", 1)[0]


def known_family(task: str) -> str | None:
    """The registry's spelling of the task's family, matched case-insensitively; None if not a known one."""
    return _FAMILY_LOOKUP.get(family_of(task).lower())


def pooled_family(task: str) -> str | None:
    """The paper-table family a task's examples are pooled into; None for unknown families and `*_all` tasks."""
    return None if task.endswith(ALL_SUFFIX) else known_family(task)


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


def _stated_order(outputs: dict[str, float], text: str) -> str | None:
    """The keys in the order a reference output states their values ("hk,dev"): each number in the text
    is matched to the closest label value; None unless that gives every key exactly once."""
    from omics.evaluate.parse import parse_numbers  # parse imports this module; numbers are read there

    numbers = parse_numbers(text)
    if len(numbers) != len(outputs):
        return None
    order = [min(outputs, key=lambda k, x=x: abs(outputs[k] - x)) for x in numbers]
    return ",".join(order) if len(set(order)) == len(order) else None


def _add_counts(into: dict[str, int], other: dict[str, int]) -> None:
    for key, count in other.items():
        into[key] = into.get(key, 0) + count


# Kinds that may share a task: scalars (binary labels written as bools, words or 0/1), objects, lists
# with comma-joined strings. Finer checks (do the words have a polarity?) happen in build_task_specs.
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


def _spellings(s: LabelSummary) -> list[str]:
    """Every scalar spelling of a task's labels, numbers included (at most _DISTINCT_CAP of them)."""
    return sorted(set(s.classes) | set(s.numbers))


def _multilabel_classes(s: LabelSummary, ec_numbers: bool) -> list[str]:
    names = set(label_items(list(s.items), ec_numbers))
    for joined in s.classes:
        names.update(label_items(joined, ec_numbers))
    return sorted(names)


def _infer_type(s: LabelSummary) -> str:
    """Type of an unknown family's task from its labels (evaluation.md §2), see build_task_specs."""
    kinds = set(s.kinds)
    if kinds == {"dict"}:
        return "multi_regression"
    if "list" in kinds or (kinds == {"string"} and any("," in c for c in s.classes)):
        return "multilabel"
    if kinds == {"number"}:
        is_01 = len(s.numbers) == 2 and {float(v) for v in s.numbers} == {0.0, 1.0}
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


def _range(s: LabelSummary, keys: list[str]) -> tuple[float, float] | dict[str, tuple[float, float]] | None:
    if keys:
        return {k: (float(s.key_ranges[k][0]), float(s.key_ranges[k][1])) for k in keys}
    if s.lo is None or s.hi is None:
        return None
    return (float(s.lo), float(s.hi))


def _keys(s: LabelSummary, family: str | None) -> list[str]:
    """Fixed order for the paper's multi-output tasks (checked against the labels), else the order most
    reference outputs state the values in, else the first label's key order."""
    keys = FIXED_KEYS.get(family or "")
    if keys is not None:
        if set(keys) != set(s.keys or []):
            raise UserError(f"task {s.task}: {family} labels need the keys {keys}, got {s.keys}")
        return list(keys)
    if s.key_orders:
        return max(sorted(s.key_orders), key=s.key_orders.__getitem__).split(",")
    return list(s.keys or [])


def _class_words(s: LabelSummary, mapping: dict[str, bool]) -> dict[bool, list[str]]:
    """Words the reference outputs use for one label and never for the other (in ≥ 1% of that label's)."""
    words = {True: [], False: []}
    by_polarity = {mapping.get(sp.strip().lower()): sp for sp in s.words or {}}
    if s.words is None or set(by_polarity) != {True, False}:
        return words
    for polarity, spelling in by_polarity.items():
        other = s.words[by_polarity[not polarity]]
        least = CLASS_WORD_SHARE * s.outputs.get(spelling, 0)
        words[polarity] = sorted(w for w, c in s.words[spelling].items() if w not in other and c >= least)
    return words


def _majority(counts: dict[str, int]) -> str | None:
    return max(sorted(counts), key=counts.__getitem__) if counts else None


def _baseline(s: LabelSummary, type_: str, keys: list[str], ec_numbers: bool) -> Any:
    """The constant predictor of §4, in normalized form: mean, majority class, most frequent label set."""
    if s.n == 0 or (type_ in ("regression", "multi_regression") and s.total is None and not s.key_totals):
        return None
    if type_ == "regression":
        return s.total / s.n
    if type_ == "multi_regression":
        return {k: s.key_totals[k] / s.n for k in keys} if set(keys) <= set(s.key_totals) else None
    if type_ == "multilabel":
        sets: dict[str, int] = {}
        for joined, count in [*s.sets.items(), *s.classes.items()]:
            key = ",".join(label_items(joined, ec_numbers))
            sets[key] = sets.get(key, 0) + count
        top = _majority(sets)
        return None if top is None else [x for x in top.split(",") if x]
    top = _majority({**s.classes, **s.numbers})
    if type_ == "binary" and top is not None:
        return (binary_mapping(_spellings(s)) or {}).get(top.strip().lower())
    return None if top is None else top.strip()


def build_task_specs(
    summary: dict[str, Any], eval_summary: dict[str, Any] | None = None
) -> dict[str, TaskSpec]:
    """TaskSpecs for every task in either summary.

    `summary` is the training file's summary when there is one (else the evaluation file's), and
    `eval_summary` the evaluation file's. Label ranges, class vocabularies (EC numbers included) and
    class words come from both together, so that a perfect prediction always scores 100 and parsing
    knows every name; the baseline comes from `summary` (the training labels) where it has the task.
    Unknown families: numbers → regression (only 0 and 1 → binary), objects of numbers →
    multi_regression, lists or comma-joined strings → multilabel, spellings that all have a
    positive/negative reading (bools, yes/no, soluble/insoluble…) → binary, other strings → multiclass.
    """
    eval_summary = eval_summary or {}
    specs: dict[str, TaskSpec] = {}
    for task in sorted(set(summary) | set(eval_summary)):
        parts = [LabelSummary.from_dict(task, d[task]) for d in (summary, eval_summary) if task in d]
        merged = parts[0]
        for extra in parts[1:]:
            merged = merged.merge(extra)
        family = known_family(task)
        if family is not None:
            type_, metric, group = FAMILIES[family]
            type_ = _check_family_type(merged, type_)
        else:
            type_ = _infer_type(merged)
            metric, group = DEFAULT_METRIC[type_], _omics_group(merged.tags)
        ec_numbers = family == "FunctionEC"
        keys = _keys(merged, family) if type_ == "multi_regression" else []
        classes = {"multiclass": sorted(merged.classes), "binary": _spellings(merged),
                   "multilabel": _multilabel_classes(merged, ec_numbers)}.get(type_, [])
        words = _class_words(merged, binary_mapping(classes) or {}) if type_ == "binary" else {True: [], False: []}
        baselines = (_baseline(p, type_, keys, ec_numbers) for p in parts)
        specs[task] = TaskSpec(
            task=task,
            family=family_of(task),
            type=type_,
            paper_metric=metric,
            keys=keys,
            classes=classes,
            label_range=_range(merged, keys) if type_ in ("regression", "multi_regression") else None,
            threshold=THRESHOLDS.get(family) if family is not None else None,
            omics_group=group,
            positive_words=words[True],
            negative_words=words[False],
            baseline=next((b for b in baselines if b is not None), None),
        )
    return specs
