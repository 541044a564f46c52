"""Task types as objects: each recognises its labels, and reads a reference answer back to its own label;
training's label check and the evaluator's registry ask the same objects."""

from __future__ import annotations

import pytest

from omics.data.labels import label_kinds_kept
from omics.errors import UserError
from omics.evaluate.tasks import build_task_specs
from omics.labels import LabelSummary, summarize_records
from omics.tasktypes import INFERENCE_ORDER, MULTICLASS, TASK_TYPES, TaskSpec, recognise

# task → (its type, [(label as the data writes it, reference answer)])
CASES = {
    "reg-x": ("regression", [(0.5, "The value is 0.5."), (2, "About 2.")]),
    "multi-x": ("multi_regression", [({"hk": 1.5, "dev": -0.25}, "hk 1.5, dev -0.25"),
                                     ({"hk": 3, "dev": 2}, "hk 3 and dev 2")]),
    "bin-x": ("binary", [("soluble", "The protein is soluble."), ("insoluble", "It is insoluble.")]),
    "cls-x": ("multiclass", [("tRNA", "This is a tRNA."), ("miRNA", "A miRNA, most likely.")]),
    "set-x": ("multilabel", [("m6A,Am", "Sites: m6A and Am."), (["Um"], "Only Um.")]),
}


@pytest.fixture(scope="module")
def specs() -> dict[str, TaskSpec]:
    records = [{"task": task, "label": label, "input": "q", "output": answer}
               for task, (_, rows) in CASES.items() for label, answer in rows]
    return build_task_specs(summarize_records(records))


@pytest.mark.parametrize("task", CASES)
def test_each_type_reads_its_reference_answers_back_to_their_labels(specs, task):
    spec = specs[task]
    assert spec.task_type is TASK_TYPES[CASES[task][0]] and str(spec.task_type) == spec.type
    for label, answer in CASES[task][1]:
        normalized = spec.task_type.normalize(label, spec)
        assert spec.task_type.is_normalized(normalized, spec)
        assert spec.task_type.parse(answer, spec) == normalized


def test_the_stored_name_round_trips_to_the_same_type_object(specs):
    for spec in specs.values():
        stored = spec.to_dict()
        assert stored["type"] == spec.type and "task_type" not in stored
        again = TaskSpec.from_dict(stored)
        assert again.task_type is spec.task_type and again.to_dict() == stored
    with pytest.raises(UserError, match="unknown type 'ordinal'"):
        TaskSpec(task="t", family="t", type="ordinal", paper_metric="x")


def test_inference_asks_every_type():
    assert sorted(t.name for t in INFERENCE_ORDER) == sorted(TASK_TYPES)


def test_a_known_family_falls_back_or_refuses_by_its_type():
    words = LabelSummary("Solubility-x")
    for label in ("sticky", "smooth"):  # a binary family whose words have no polarity
        words.add(label)
    assert recognise(words, "Solubility") is MULTICLASS
    numbers = LabelSummary("NoncodingRNAFamily-x")
    numbers.add(0.5)
    with pytest.raises(UserError, match="multiclass family but labels are of kinds"):
        recognise(numbers, "NoncodingRNAFamily")


def test_training_refuses_what_the_evaluator_refuses():
    records = [{"task": "enhancer_activity-x", "label": {"hk": 1.0, "other": 2.0}, "input": "q", "output": "1 2"}]
    with pytest.raises(UserError) as refused:
        build_task_specs(summarize_records(records))
    _, unusable = label_kinds_kept(records)
    assert unusable == {"enhancer_activity-x": str(refused.value)}
    assert "need the keys ['hk', 'dev']" in unusable["enhancer_activity-x"]
