"""GRPO's rewards against hand-computed values: every task type of the bundled data (specs built from its real
label summary, as `omics grpo train` builds them), the types it lacks, and the reasoning format."""

from __future__ import annotations

import pytest

from omics import paths
from omics.data.labels import training_label_summary
from omics.evaluate.tasks import build_task_specs
from omics.rewards import answer_reward, correctness, format_reward
from omics.tasktypes import TaskSpec


@pytest.fixture(scope="module")
def specs() -> dict[str, TaskSpec]:
    return build_task_specs(training_label_summary(paths.SAMPLES / "stage2_train.jsonl"))


# task → [(answer, label, reward)]; ranges from the bundled training labels
BUNDLED = {
    # regression on gc_content's range 19.15..81.25 (width 62.1): 1 − 6.21 / 62.1 = 0.9
    "gc_content": [("The GC content is 56.21%.", 50.0, 0.9), ("50", 50.0, 1.0), ("about 500", 50.0, 0.0),
                   ("high", 50.0, 0.0)],
    # regression on 7.15..86.93 (width 79.78): 1 − 39.89 / 79.78 = 0.5; 10 below the label: 1 − 10 / 79.78
    "sirnaEfficiency-demo": [("Efficiency: 59.89", 20.0, 0.5), ("10", 20.0, 1 - 10 / 79.78)],
    "Solubility-hydrophobic": [("The protein is predicted to be positive for solubility.", "positive", 1.0),
                               ("The protein is predicted to be positive for solubility.", "negative", 0.0),
                               ("I don't know.", "negative", 0.0)],
    "emp-gcrich": [("The sequence is negative for high GC content.", "negative", 1.0), ("", "negative", 0.0)],
    "NoncodingRNAFamily-dominant": [("The dominant base is guanine.", "guanine", 1.0),
                                    ("The dominant base is guanine.", "uracil", 0.0), ("no idea", "uracil", 0.0)],
}


@pytest.mark.parametrize("task", BUNDLED)
def test_bundled_task_types(specs, task):
    assert {specs[t].type for t in BUNDLED} == {"regression", "binary", "multiclass"}
    for answer, label, expected in BUNDLED[task]:
        assert correctness(answer, label, specs[task]) == pytest.approx(expected), answer


def test_multilabel_is_jaccard():
    spec = TaskSpec(task="Modification-x", family="Modification", type="multilabel", paper_metric="macro_AUC",
                    classes=["Am", "Cm", "Gm", "m6A", "none"])
    assert correctness("Am, Cm and m6A", "Am,m6A", spec) == pytest.approx(2 / 3)  # {Am, m6A} of {Am, Cm, m6A}
    assert correctness("m6A and Am", ["m6A", "Am"], spec) == 1.0
    assert correctness("No modification was detected.", "none", spec) == 1.0
    assert correctness("Gm", "Am,m6A", spec) == 0.0


def test_ec_numbers_as_the_evaluation_reads_them():
    spec = TaskSpec(task="FunctionEC-x", family="FunctionEC", type="multilabel", paper_metric="Fmax",
                    classes=["1.1.1.1", "2.7.11.1"])
    assert correctness("EC 2.7.11.1 and 1.1.1.1", "EC 2.7.11.1", spec) == 0.5
    assert correctness("EC 3.1.1.1", "EC 2.7.11.1", spec) == 0.0  # outside the task's EC vocabulary: unreadable


def test_multi_regression_is_the_mean_closeness_per_key():
    spec = TaskSpec(task="enhancer_activity-x", family="enhancer_activity", type="multi_regression",
                    paper_metric="PCC", keys=["hk", "dev"], label_range={"hk": (0.0, 10.0), "dev": (-2.0, 2.0)})
    # hk: 1 − 2/10 = 0.8, dev: 1 − 1/4 = 0.75 → 0.775
    assert correctness("hk 6, dev 1", {"hk": 4, "dev": 0}, spec) == pytest.approx(0.775)
    assert correctness("hk 6", {"hk": 4, "dev": 0}, spec) == 0.0  # one number for two keys: unreadable


def test_reasoning_answer_read_inside_its_tags(specs):
    spec = specs["emp-gcrich"]
    wellformed = "<reasoning>GC pairs dominate.</reasoning> <answer>positive</answer>"
    assert (answer_reward(wellformed, "positive", spec, reasoning=True), format_reward(wellformed)) == (1.0, 1.0)
    untagged = "<reasoning>GC pairs dominate.</reasoning> positive"
    assert (answer_reward(untagged, "positive", spec, reasoning=True), format_reward(untagged)) == (0.0, 0.0)
    assert answer_reward(untagged, "positive", spec, reasoning=False) == 1.0  # a direct model's whole answer
    bare = "<answer>positive</answer>"
    assert (answer_reward(bare, "positive", spec, reasoning=True), format_reward(bare)) == (1.0, 0.0)
    reasoned = "<reasoning>count</reasoning><answer>56.21</answer>"
    assert answer_reward(reasoned, 50.0, specs["gc_content"], reasoning=True) == pytest.approx(0.9)
    assert format_reward("<reasoning></reasoning> <answer>positive</answer>") == 0.0  # empty reasoning
    assert format_reward(wellformed + " <answer>negative</answer>") == 0.0  # two answers
