"""The evaluation's scores: one task's (evaluation.md §2–3: its type scores it, see omics.scores), the paper
table with each family pooled, and the overall means. Pure functions: numpy only, no model."""

from __future__ import annotations

from typing import Any

import numpy as np

from omics.evaluate.tasks import PAPER_COLUMNS
from omics.families import FAMILIES, pooled_family
from omics.tasktypes import TASK_TYPES, TaskSpec


def _check_labels(spec: TaskSpec, labels: list) -> None:
    """Labels must already be in prediction form (normalize_label), or the scores would be nonsense."""
    for x in labels:
        if not spec.task_type.is_normalized(x, spec):
            raise ValueError(f"task {spec.task}: label {x!r} is not a normalized {spec.type} label")


def score_task(
    spec: TaskSpec, labels: list, predictions: list, probabilities: list[float] | None = None
) -> dict[str, Any]:
    """All scores of one task (JSON-serialisable).

    `labels` are normalize_label outputs, `predictions` parse_prediction outputs (None = invalid; NaN,
    inf and |x| > 1000 are invalid too), `probabilities` the model's probability of the true class per
    sample for the classification Mixed Score (None: hard 1/0)."""
    n = len(labels)
    if n == 0:
        raise ValueError(f"task {spec.task}: no samples to score")
    if len(predictions) != n or (probabilities is not None and len(probabilities) != n):
        raise ValueError(f"task {spec.task}: {n} labels but {len(predictions)} predictions/probabilities")
    _check_labels(spec, labels)
    body = spec.task_type.score(spec, labels, predictions, probabilities)
    head = {
        "task": spec.task,
        "family": spec.family,
        "type": spec.type,
        "omics_group": spec.omics_group,
        "n": n,
        "n_valid": body["n_valid"],
        "valid_rate": round(body["n_valid"] / n, 4),
        "collapse": any("collapse:" in w for w in body["warnings"]),
    }
    return {**head, **body}


def baseline_scores(spec: TaskSpec, labels: list) -> dict[str, Any] | None:
    """Paper metric and Mixed Score of the task's constant predictor (spec.baseline), None without one."""
    if spec.baseline is None:
        return None
    result = score_task(spec, labels, [spec.baseline] * len(labels))
    return {"prediction": spec.baseline, "paper_metric": result["paper_metric"]["value"],
            "mixed_score": result["mixed_score"]}


def _pooled_spec(family: str, specs: list[TaskSpec]) -> TaskSpec:
    """One spec for a family's pooled examples: the union of its tasks' classes and label ranges."""
    first, ranges = specs[0], [s.label_range for s in specs if s.label_range is not None]
    label_range: Any = None
    if first.keys and ranges:
        label_range = {k: (min(r[k][0] for r in ranges), max(r[k][1] for r in ranges)) for k in first.keys}
    elif ranges:
        label_range = (min(r[0] for r in ranges), max(r[1] for r in ranges))
    classes = sorted(set().union(*(s.classes for s in specs)))
    return TaskSpec(task=family, family=family, type=first.type, paper_metric=first.paper_metric, keys=first.keys,
                    classes=classes, label_range=label_range, threshold=first.threshold,
                    omics_group=first.omics_group)


def paper_table(groups: list[tuple[TaskSpec, list, list]]) -> dict[str, float | None]:
    """The paper table (evaluation.md §2): {column: value} in the paper's column order, for the columns
    present. Each known family's paper metric is computed ONCE on all its tasks' examples pooled (one
    MCC over every emp-* example), as the paper's evaluator does; `*_all` tasks repeat their parts and
    stay out. `groups` holds (spec, normalized labels, parsed predictions) per task."""
    pools: dict[str, list[tuple[TaskSpec, list, list]]] = {}
    for spec, labels, predictions in groups:
        family = pooled_family(spec.task)
        # a binary task read as multiclass stays out
        if family is not None and spec.task_type is TASK_TYPES[FAMILIES[family][0]]:
            pools.setdefault(family, []).append((spec, labels, predictions))
    metrics = {
        family: score_task(_pooled_spec(family, [g[0] for g in pool]), [x for g in pool for x in g[1]],
                           [x for g in pool for x in g[2]])["paper_metric"]
        for family, pool in pools.items()
    }
    return {column: metrics[family]["per_output"][key] if key else metrics[family]["value"]
            for column, (family, key) in PAPER_COLUMNS.items() if family in metrics}


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 2) if values else None


def summarize_overall(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Unweighted mean Mixed Score over tasks and per known omics group. Paper metrics are not
    averaged: they are different metrics (MCC, r², Spearman…) with no common scale."""
    groups: dict[str, list[float]] = {}
    for r in results.values():
        if r["omics_group"] != "unknown":
            groups.setdefault(r["omics_group"], []).append(r["mixed_score"])
    return {
        "mixed_score_mean": _mean([r["mixed_score"] for r in results.values()]),
        "by_omics": {g: _mean(v) for g, v in sorted(groups.items())},
        "n_tasks": len(results),
        "n_examples": sum(int(r["n"]) for r in results.values()),
    }
