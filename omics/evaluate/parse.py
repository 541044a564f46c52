"""Generated text → prediction, and data label → the same representation (evaluation.md §1), each read by the
task's own type (omics.tasktypes; the text readers are in omics.answers).

A prediction is None when the text cannot be read as one (invalid); metrics count it, never drop it.
Parsing never looks at the label.
"""

from __future__ import annotations

from typing import Any

from omics.tasktypes import TaskSpec


def parse_prediction(text: str, spec: TaskSpec) -> Any:
    """The prediction in `text` for `spec`'s task type, or None when invalid.

    regression: float (first number; None if absent or non-finite); multi_regression: {key: float}
    from exactly len(spec.keys) numbers in spec.keys order; binary: bool; multiclass: str; multilabel:
    sorted list[str]. Stage 3 callers pass `extract_answer(text)[0]`."""
    return spec.task_type.parse(text, spec)


def normalize_label(label: Any, spec: TaskSpec) -> Any:
    """A data label in the representation `parse_prediction` returns for the same task: float;
    {key: float} in spec.keys order; bool (True = positive/yes/true/1); str; sorted list[str] (a
    comma- or semicolon-joined string is split; FunctionEC: the EC numbers in it, `EC 2.7.11.1` → 2.7.11.1)."""
    return spec.task_type.normalize(label, spec)
