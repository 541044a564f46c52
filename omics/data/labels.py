"""Training labels checked against their task: which label kinds a task keeps, the label summary the evaluator
reads (ranges, classes, answer words), and the warnings about tasks whose scores mean less than they seem.

Torch-free, so `omics score --train-data` reads a training file exactly as training did without a model stack.
"""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from itertools import combinations
from pathlib import Path

from omics.config import TrainConfig
from omics.data.validate import DataError, DataReport, read_instructions
from omics.families import known_family
from omics.labels import LabelSummary, label_kind
from omics.tasktypes import recognise

# Fewer training examples than this and a task's score says little: the model saw it a handful of times, and
# the label range its Mixed Score is rescaled by spans on average only (n-1)/(n+1) of the label distribution
# (n = 20: 90%), a class list may miss classes.
MIN_TASK_EXAMPLES = 20
KIND_NAMES = {"number": "numeric", "bool": "true/false", "string": "text", "list": "list", "dict": "object"}


def _makes_a_task(task: str, parts: Sequence[LabelSummary]) -> str | None:
    """None when these labels make one task type for the evaluator, else why not."""
    try:
        recognise(functools.reduce(LabelSummary.merge, parts), known_family(task))
    except ValueError as err:
        return str(err)
    return None


def label_kinds_kept(records: Iterable[dict]) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Per task, the label kinds training keeps; and the tasks whose labels make no task type at all (why).

    All kinds when together they make one task type (0/1, true/false and yes/no may share a binary task);
    else the largest group of kinds that does, by count: the others contradict the task ("high" or true
    among numbers, a number among class names). One streaming pass, memory O(tasks x classes)."""
    by_kind: dict[str, dict[str, LabelSummary]] = defaultdict(dict)
    for record in records:
        summary = by_kind[record["task"]].setdefault(label_kind(record["label"]), LabelSummary(record["task"]))
        with contextlib.suppress(ValueError):  # object keys unlike the first label's: refused line by line later
            summary.add(record["label"], record["input"], record.get("output", ""))
    kept, unusable = {}, {}
    for task, kinds in by_kind.items():
        groups = sorted((g for size in range(len(kinds), 0, -1) for g in combinations(kinds, size)),
                        key=lambda g: -sum(kinds[k].n for k in g))
        kept[task] = next((g for g in groups if _makes_a_task(task, [kinds[k] for k in g]) is None), tuple(kinds))
        if (problem := _makes_a_task(task, [kinds[k] for k in kept[task]])) is not None:
            unusable[task] = problem
    return kept, unusable


def consistent_labels(records: Iterable[dict], kept: dict[str, tuple[str, ...]], summaries: dict[str, LabelSummary],
                       path: str | Path, config: TrainConfig, report: DataReport) -> Iterator[dict]:
    """The records whose label fits their task's other labels, counted into `summaries`; the others are
    reported with their line numbers (with on_bad_line=stop, the first one refuses the file)."""
    for record in records:
        task, kind = record["task"], label_kind(record["label"])
        problem = None
        if kind not in kept[task]:
            others = "/".join(KIND_NAMES[k] for k in kept[task])
            problem = f"task {task}: {KIND_NAMES[kind]} label among {others} labels"
        else:
            try:
                summary = summaries.setdefault(task, LabelSummary(task))
                summary.add(record["label"], record["input"], record.get("output", ""))
            except ValueError:  # the one check left to add(): object keys
                problem = f"task {task}: label object keys unlike the task's first label's"
        if problem is None:
            yield record
            continue
        if config.on_bad_line == "stop":
            raise DataError(f"{path}:{record['line']}: label {record['label']!r}: {problem}. Fix the label, or pass "
                            "--set on_bad_line=skip to skip such lines with a report.")
        report.drop(record["line"], problem, task)


def training_label_summary(path: str | Path) -> dict[str, dict]:
    """Per-task label summary of a training file as training saw it (labels contradicting their task left
    out), for evaluating with --train-data."""
    kept, _ = label_kinds_kept(read_instructions(path, DataReport(str(path))))
    summaries: dict[str, LabelSummary] = {}
    for _ in consistent_labels(read_instructions(path, DataReport(str(path))), kept, summaries, path, TrainConfig(),
                                DataReport(str(path))):
        pass
    return {task: s.to_dict() for task, s in sorted(summaries.items())}


def task_warnings(train_summary: dict | None, tasks: Iterable[str] | None = None) -> list[str]:
    """What makes some tasks' scores mean less than they seem: few training examples, or none at all.

    `tasks`: the evaluated tasks (default: every training task)."""
    if train_summary is None:
        return ["no training data summary (pass --train-data, or a model folder whose omics_model.json has one): "
                "every task's label range and class list come from the test labels only"]
    tasks = sorted(train_summary if tasks is None else set(tasks))
    few = [f"task {t}: only {train_summary[t]['n']} training examples (< {MIN_TASK_EXAMPLES}): the model rarely "
           "saw it and its label range / class list come from these few labels; its score is noisy"
           for t in tasks if t in train_summary and train_summary[t]["n"] < MIN_TASK_EXAMPLES]
    unseen = [f"task {t}: not in the training data: never trained on, and its label range / class list come "
              "from the test labels only (not comparable with trained tasks' scores)"
              for t in tasks if t not in train_summary]
    return few + unseen
