"""Generated text → prediction, and data label → the same representation (evaluation.md §1).

A prediction is None when the text cannot be read as one (invalid); metrics count it, never drop it.
The regression validity rule (finite, |x| ≤ 1000 in the task's units) lives here in `is_valid_number`,
applied by `parse_prediction` and again by the metrics to predictions that come from elsewhere.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

from omics.errors import UserError
from omics.evaluate.tasks import NEGATIVE_WORDS, POSITIVE_WORDS, TaskSpec, binary_mapping, label_spelling

MAX_ABS_REGRESSION = 1000.0

# Innermost complete block: "<answer>" not followed by another "<answer>" before its "</answer>".
_ANSWER = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.S | re.I)
_REASONED = re.compile(r"\s*<reasoning>(.*?)</reasoning>\s*<answer>(.*?)</answer>\s*", re.S | re.I)
_TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")

# A number not glued to a preceding letter/digit/dot (so H3K4me3 or 1.2.3's tail are not read):
# -12, 3.5, 72., .5, 1e-3, 2.5E+4; a trailing % is simply ignored (72.00% → 72.0).
_NUMBER = re.compile(r"(?<![\w.])[-\u2212]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_EC = re.compile(r"(?<![\w.])\d+\.\d+\.\d+\.(?:\d+|-)")

# Negations are looked for first: "not associated", "no evidence", "does not", "doesn't" all end here.
_NEGATIVE = re.compile(r"\b(?:not|no|cannot|absent|absence|negative|false)\b|n['\u2019]t\b", re.I)
_POSITIVE = re.compile(r"\b(?:yes|positive|true|present|is associated|are associated)\b", re.I)


def extract_answer(text: str) -> tuple[str, bool]:
    """(answer text, format-compliant) for a Stage 3 output.

    The answer is the content of the LAST complete `<answer>…</answer>` block (the innermost one if
    blocks are nested), stripped; text outside it is ignored. With no complete block (missing,
    unclosed or stray tags) the whole text is returned and the sample is format-noncompliant."""
    blocks = _ANSWER.findall(text)
    if not blocks:
        return text, False
    return blocks[-1].strip(), True


def has_wellformed_reasoning(text: str) -> bool:
    """True for exactly `<reasoning>…</reasoning>` then `<answer>…</answer>`, both non-empty, with only
    whitespace around them: the shape Stage 3 training outputs must have to teach the format."""
    lower = text.lower()
    if any(lower.count(tag) != 1 for tag in _TAGS):
        return False
    match = _REASONED.fullmatch(text)
    return bool(match and match.group(1).strip() and match.group(2).strip())


def _to_float(token: str) -> float:
    return float(token.replace("\u2212", "-"))


def parse_numbers(text: str) -> list[float]:
    """Every number in the text, in order (see _NUMBER for what counts as one)."""
    return [_to_float(m) for m in _NUMBER.findall(text)]


def parse_number(text: str) -> float | None:
    """The FIRST number in the text, or None."""
    match = _NUMBER.search(text)
    return None if match is None else _to_float(match.group())


def is_valid_number(x: Any) -> bool:
    """A usable regression value: a real number (not bool), finite, |x| ≤ 1000 as in the paper."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    return math.isfinite(x) and abs(x) <= MAX_ABS_REGRESSION


@lru_cache(maxsize=4096)
def _name_pattern(name: str, ignore_case: bool) -> re.Pattern[str]:
    """Whole-word pattern for a class name; `_`, `-` and spaces inside it match one another."""
    parts = [re.escape(p) for p in re.split(r"[\s_-]+", name.strip()) if p]
    body = r"[\s_-]+".join(parts)
    return re.compile(rf"(?<![A-Za-z0-9]){body}(?![A-Za-z0-9])", re.I if ignore_case else 0)


def _longest_first(classes: list[str] | tuple[str, ...]) -> list[str]:
    return sorted({c for c in classes if re.search(r"[A-Za-z0-9]", c)}, key=lambda c: (-len(c), c))


def _find_names(text: str, classes: list[str] | tuple[str, ...], first_only: bool) -> list[str]:
    """Class names found in the text, longest first, each match masking the text it covers (so `miRNA`
    is not also found inside `pre-miRNA`). Exact-case matches win: only if none is found is the
    text searched case-insensitively, which keeps `Am`/`Um` classes from matching "I am" / "um"."""
    for ignore_case in (False, True):
        found, masked = [], text
        for name in _longest_first(classes):
            pattern = _name_pattern(name, ignore_case)
            if pattern.search(masked):
                found.append(name)
                if first_only:
                    return found
                masked = pattern.sub(lambda m: " " * len(m.group()), masked)
        if found:
            return found
    return []


def parse_class(text: str, classes: list[str]) -> str | None:
    """Multi-class: the longest known class name in the text (whole words); None if none."""
    found = _find_names(text, classes, first_only=True)
    return found[0] if found else None


def parse_labels(text: str, classes: list[str], ec_numbers: bool = False) -> list[str] | None:
    """Multi-label: sorted known class names found ("none" is a class like any other); for EC tasks
    every EC number in the text (`1.1.1.1`, `1.1.1.-`), known or not. None if nothing is found."""
    found = sorted(set(_EC.findall(text))) if ec_numbers else sorted(_find_names(text, classes, False))
    return found or None


def parse_binary(text: str, classes: list[str] | tuple[str, ...] = ()) -> bool | None:
    """Binary: negation wording first (→ False), then positive wording (→ True), else None.

    Task-specific spellings with a polarity (e.g. soluble/insoluble from `classes`) join the
    negative and positive wording respectively."""
    mapping = binary_mapping(classes) or {}
    custom = {s: v for s, v in mapping.items() if s not in POSITIVE_WORDS | NEGATIVE_WORDS}
    negatives = [s for s, v in custom.items() if not v]
    positives = [s for s, v in custom.items() if v]
    if _NEGATIVE.search(text) or _find_names(text, negatives, first_only=True):
        return False
    if _POSITIVE.search(text) or _find_names(text, positives, first_only=True):
        return True
    return None


def parse_prediction(text: str, spec: TaskSpec) -> Any:
    """The prediction in `text` for `spec`'s task type, or None when invalid.

    regression: float (first number; None if absent, non-finite or |x| > 1000); multi_regression:
    {key: float} from exactly len(spec.keys) numbers in key order; binary: bool; multiclass: str;
    multilabel: sorted list[str]. Stage 3 callers pass `extract_answer(text)[0]`."""
    if spec.type == "regression":
        value = parse_number(text)
        return value if is_valid_number(value) else None
    if spec.type == "multi_regression":
        values = parse_numbers(text)
        if len(values) != len(spec.keys) or not all(is_valid_number(v) for v in values):
            return None
        return dict(zip(spec.keys, values, strict=True))
    if spec.type == "binary":
        return parse_binary(text, spec.classes)
    if spec.type == "multiclass":
        return parse_class(text, spec.classes)
    return parse_labels(text, spec.classes, ec_numbers=spec.family == "FunctionEC")


def _label_float(label: Any, spec: TaskSpec) -> float:
    value = float(label) if not isinstance(label, bool) else math.nan
    if not math.isfinite(value):
        raise UserError(f"task {spec.task}: label {label!r} is not a finite number")
    return value


def normalize_label(label: Any, spec: TaskSpec) -> Any:
    """A data label in the representation `parse_prediction` returns for the same task: float;
    {key: float} in spec.keys order; bool (True = positive/yes/true/1); str; sorted list[str] (a
    comma- or semicolon-joined string is split)."""
    if spec.type == "regression":
        return _label_float(label, spec)
    if spec.type == "multi_regression":
        if not isinstance(label, dict) or set(label) != set(spec.keys):
            raise UserError(f"task {spec.task}: label {label!r} does not have the keys {spec.keys}")
        return {k: _label_float(label[k], spec) for k in spec.keys}
    if spec.type == "binary":
        mapping = {**{w: True for w in POSITIVE_WORDS}, **{w: False for w in NEGATIVE_WORDS}}
        mapping.update(binary_mapping(spec.classes) or {})
        value = mapping.get(label_spelling(label).strip().lower())
        if value is None:
            raise UserError(f"task {spec.task}: binary label {label!r} is neither positive nor negative")
        return value
    if spec.type == "multiclass":
        return str(label).strip()
    items = label if isinstance(label, list | tuple) else re.split(r"[,;]", str(label))
    return sorted({str(item).strip() for item in items if str(item).strip()})
