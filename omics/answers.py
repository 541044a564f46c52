"""Reading a generated answer as text (evaluation.md §1): the Stage 3 answer format, numbers, class names and
yes/no wording. Pure text functions, no task registry: the data layer checks training outputs with them and the
task types read predictions with them. A huge number is still a number: only the paper's Mixed Score treats
|x| > 1000 as invalid, as the paper's evaluator does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

# Innermost complete block: "<answer>" not followed by another "<answer>" before its "</answer>".
_ANSWER = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.S | re.I)
_REASONED = re.compile(r"\s*<reasoning>(.*?)</reasoning>\s*<answer>(.*?)</answer>\s*", re.S | re.I)
_TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")

# A number not glued to a preceding letter/digit/dot (so H3K4me3 or 1.2.3's tail are not read):
# -12, 3.5, 72., .5, 1e-3, 2.5E+4; a trailing % is simply ignored (72.00% → 72.0).
_NUMBER = re.compile(r"(?<![\w.])[-\u2212]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")

# Hedges make an answer invalid, whatever else it says ("I don't know" is not a "no"); then negations are
# looked for ("not associated", "no evidence", "does not", "doesn't", "insoluble"), then affirmations.
_HEDGE = re.compile(
    r"\b(?:(?:do|does|did)\s*n[o'\u2019]t\s+know|unknown|uncertain|unsure|not\s+sure|"
    r"(?:cannot|can['\u2019]?t|could\s+not)\s+(?:be\s+)?determined?)\b",
    re.I,
)
_NEGATIVE = re.compile(
    r"\b(?:not|no|none|cannot|absent|absence|lacks?|negative|false|insoluble|unlikely)\b|n['\u2019]t\b", re.I
)
_POSITIVE = re.compile(r"\b(?:yes|positive|true|present|is associated|are associated|soluble)\b", re.I)

POSITIVE_WORDS = frozenset({"true", "yes", "positive", "1", "1.0"})
NEGATIVE_WORDS = frozenset({"false", "no", "negative", "0", "0.0"})
_NEGATING_PREFIXES = ("non-", "non", "not ", "not-", "un", "in", "dis")
EC_NUMBER = re.compile(r"(?<![\w.])\d+\.\d+\.\d+\.-?\d*")  # FunctionEC: in labels as in outputs


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
    """A usable regression value: a real number (not bool) and finite."""
    return not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x)


def _name_body(name: str, plural: bool) -> str:
    """A class name as a pattern: `_`, `-` and spaces inside it match one another; with `plural`, a
    trailing `s` too (`tRNAs` → tRNA)."""
    parts = [re.escape(p) for p in re.split(r"[\s_-]+", name.strip()) if p]
    return r"[\s_-]+".join(parts) + ("s?" if plural else "")


@lru_cache(maxsize=1024)
def _names_pattern(
    classes: tuple[str, ...], ignore_case: bool, plural: bool
) -> tuple[re.Pattern[str], list[str]] | None:
    """One whole-word pattern for all of a task's class names, longest first, and the names by group: at
    any position the longest name wins, so `miRNA` is not also found inside `pre-miRNA`."""
    names = sorted({c for c in classes if re.search(r"[A-Za-z0-9]", c)}, key=lambda c: (-len(c), c))
    if not names:
        return None
    body = "|".join(f"(?P<c{i}>{_name_body(name, plural)})" for i, name in enumerate(names))
    return re.compile(rf"(?<![A-Za-z0-9])(?:{body})(?![A-Za-z0-9])", re.I if ignore_case else 0), names


def _find_names(text: str, classes: list[str] | tuple[str, ...], plural: bool = False) -> list[str]:
    """Class names found in the text, longest first. Exact-case matches win: only if none is found is
    the text searched case-insensitively, which keeps `Am`/`Um` classes from matching "I am" / "um"."""
    for ignore_case in (False, True):
        compiled = _names_pattern(tuple(classes), ignore_case, plural)
        if compiled is None:
            return []
        pattern, names = compiled
        found = {names[int(m.lastgroup[1:])] for m in pattern.finditer(text)}
        if found:
            return sorted(found, key=lambda c: (-len(c), c))
    return []


def parse_class(text: str, classes: list[str]) -> str | None:
    """Multi-class: the longest known class name in the text (whole words, or + plural s); None if none."""
    found = _find_names(text, classes, plural=True)
    return found[0] if found else None


def parse_labels(text: str, classes: list[str], ec_numbers: bool = False) -> list[str] | None:
    """Multi-label: sorted known class names found ("none" is a class like any other); negative wording
    with no class found ("No modifications were detected") → ["none"] when the task has that class.
    EC tasks: every EC number in the text that is in the task's EC vocabulary (`classes`), as the
    paper's evaluator keeps only its label vocabulary. None if nothing is found."""
    if ec_numbers:
        vocabulary = set(classes)
        return sorted({ec for ec in EC_NUMBER.findall(text) if ec in vocabulary}) or None
    found = sorted(_find_names(text, classes))
    if not found and "none" in classes and _NEGATIVE.search(text):
        return ["none"]
    return found or None


def parse_binary(
    text: str, classes: list[str] | tuple[str, ...] = (), negative_words: tuple[str, ...] = (),
    positive_words: tuple[str, ...] = (),
) -> bool | None:
    """Binary: a hedge ("I don't know", "uncertain") → None; negation wording (→ False), then positive
    wording (→ True); then the task's own class words, negative first; else None.

    The task's own words are its spellings with a polarity (e.g. soluble/insoluble from `classes`) and
    the words its reference outputs use for one label only (`negative_words`, `positive_words`)."""
    if _HEDGE.search(text):
        return None
    if _NEGATIVE.search(text):
        return False
    if _POSITIVE.search(text):
        return True
    for value, pattern in zip((False, True), _class_words(tuple(classes), negative_words, positive_words), strict=True):
        if pattern is not None and pattern.search(text):
            return value
    return None


@lru_cache(maxsize=1024)
def _class_words(
    classes: tuple[str, ...], negative_words: tuple[str, ...], positive_words: tuple[str, ...]
) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    """(negative, positive) patterns of a binary task's own words: its polar spellings and class words."""
    custom = {s: v for s, v in (binary_mapping(classes) or {}).items() if s not in POSITIVE_WORDS | NEGATIVE_WORDS}
    patterns = []
    for value, words in ((False, negative_words), (True, positive_words)):
        compiled = _names_pattern(tuple({*words, *(s for s, v in custom.items() if v is value)}), True, False)
        patterns.append(None if compiled is None else compiled[0])
    return patterns[0], patterns[1]
