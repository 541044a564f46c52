"""Verifiable rewards for RL tuning (GRPO): how right a generated answer is, read by the evaluation's own parsers.

Per task type (omics.tasktypes), a reward in [0, 1]:
- binary, multiclass: 1 when the parsed answer is the label, else 0;
- multilabel (EC numbers included, read as the evaluation reads them): the Jaccard index |P ∩ L| / |P ∪ L|, so a
  missing label and an extra one cost alike (listing every class is not rewarded);
- regression: 1 − |prediction − label| / (hi − lo) on the task's label range, clipped to [0, 1];
  multi_regression: the mean of that closeness over the keys, each on its own range;
- an answer the parser cannot read: 0.
A reasoning model's answer is read inside its last `<answer>…</answer>` block (none: 0), and its format reward is
1 for exactly `<reasoning>…</reasoning> <answer>…</answer>`, else 0. Pure Python: no torch.
"""

from __future__ import annotations

from typing import Any

from omics.answers import extract_answer, has_wellformed_reasoning
from omics.tasktypes import TaskSpec


def closeness(prediction: float, label: float, label_range: tuple[float, float] | None) -> float:
    """1 − |prediction − label| / range width, clipped to [0, 1]; a range of one value (or none): 1 only when equal."""
    width = label_range[1] - label_range[0] if label_range else 0.0
    if width <= 0:
        return float(prediction == label)
    return min(1.0, max(0.0, 1.0 - abs(prediction - label) / width))


def jaccard(predicted: list[str], labels: list[str]) -> float:
    union = set(predicted) | set(labels)
    return len(set(predicted) & set(labels)) / len(union) if union else 1.0


def correctness(answer: str, label: Any, spec: TaskSpec) -> float:
    """How right `answer` (the answer text, tags removed) is for the data `label` of `spec`'s task, in [0, 1]."""
    task_type = spec.task_type
    return prediction_score(task_type.parse(answer, spec), task_type.normalize(label, spec), spec)


def prediction_score(prediction: Any, truth: Any, spec: TaskSpec) -> float:
    """How right an already parsed prediction is against the normalised label, in [0, 1] (None, unreadable: 0)."""
    if prediction is None:
        return 0.0
    if spec.type == "regression":
        return closeness(prediction, truth, spec.label_range)
    if spec.type == "multi_regression":
        return sum(closeness(prediction[k], truth[k], spec.label_range[k]) for k in spec.keys) / len(spec.keys)
    if spec.type == "multilabel":
        return jaccard(prediction, truth)
    return float(prediction == truth)


def answer_reward(completion: str, label: Any, spec: TaskSpec, reasoning: bool) -> float:
    """The correctness of a whole completion: a reasoning model's read inside its answer tags (none: 0)."""
    if not reasoning:
        return correctness(completion, label, spec)
    answer, tagged = extract_answer(completion)
    return correctness(answer, label, spec) if tagged else 0.0


def format_reward(completion: str) -> float:
    """1 for a well-formed `<reasoning>…</reasoning> <answer>…</answer>`, else 0."""
    return float(has_wellformed_reasoning(completion))
