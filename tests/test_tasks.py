"""Task registry: family table, label summaries, type inference, TaskSpec JSON round trip."""

from __future__ import annotations

import json

import pytest

from omics.evaluate.tasks import TaskSpec, build_task_specs, family_of
from omics.labels import summarize_records


def rec(task: str, label, text: str = "") -> dict:
    return {"task": task, "input": text, "output": "", "label": label}


def specs_of(*records: dict, eval_records: tuple = ()) -> dict[str, TaskSpec]:
    eval_summary = summarize_records(eval_records) if eval_records else None
    return build_task_specs(summarize_records(records), eval_summary)


def test_family_is_prefix_before_first_dash():
    assert family_of("emp-H3") == "emp"
    assert family_of("tf-h-0") == "tf_h"  # the paper evaluator's renames: human and mouse TF binding apart
    assert family_of("tf-m-1") == "tf_m"
    assert family_of("TF-H-0") == "TF_H"
    assert family_of("tf-x") == "tf"
    assert family_of("plain") == "plain"


def test_summary_streams_and_counts():
    records = (
        rec("x-a", v, "<dna>ACGT<dna> and <protein>MK<protein>") for v in (3.0, -1.5, 7)
    )  # a generator: read once
    s = summarize_records(records)["x-a"]
    assert s["n"] == 3
    assert s["kinds"] == {"number": 3}
    assert (s["min"], s["max"]) == (-1.5, 7.0)
    assert s["tags"] == ["dna", "protein"]
    json.dumps(s)


def test_known_families():
    specs = specs_of(
        rec("emp-H3", "positive", "<dna>ACGT<dna>"),
        rec("emp-H3", "negative"),
        rec("sirnaEfficiency-s", 72.0),
        rec("sirnaEfficiency-s", 12.5),
        rec("ProgrammableRNASwitches-p", {"ON": 0.1, "OFF": 0.2, "ON_OFF": -0.1}),
        rec("ProgrammableRNASwitches-p", {"ON_OFF": 0.3, "OFF": 0.9, "ON": 0.5}),
        rec("Solubility-s", "soluble"),
        rec("Solubility-s", "insoluble"),
        rec("FunctionEC-e", ["1.1.1.1", "2.7.11.1"]),
        rec("Modification-m", "m6A, Am"),
        rec("Modification-m", ["none"]),
    )
    emp = specs["emp-H3"]
    assert (emp.family, emp.type, emp.paper_metric, emp.omics_group) == ("emp", "binary", "MCC", "DNA")
    assert emp.classes == ["negative", "positive"]
    si = specs["sirnaEfficiency-s"]
    assert (si.type, si.paper_metric, si.threshold, si.omics_group) == (
        "regression", "mixed_score", 30.0, "multi-molecule",
    )  # fmt: skip
    assert si.label_range == (12.5, 72.0)
    sw = specs["ProgrammableRNASwitches-p"]
    assert (sw.type, sw.paper_metric, sw.keys) == ("multi_regression", "mean_R2", ["ON", "OFF", "ON_OFF"])
    assert sw.label_range == {"ON": (0.1, 0.5), "OFF": (0.2, 0.9), "ON_OFF": (-0.1, 0.3)}
    so = specs["Solubility-s"]
    assert (so.type, so.paper_metric, so.omics_group) == ("binary", "accuracy", "protein")
    ec = specs["FunctionEC-e"]
    assert (ec.type, ec.paper_metric, ec.classes) == ("multilabel", "Fmax", ["1.1.1.1", "2.7.11.1"])
    mod = specs["Modification-m"]
    assert (mod.type, mod.paper_metric, mod.omics_group) == ("multilabel", "macro_AUC", "RNA")
    assert mod.classes == ["Am", "m6A", "none"]  # comma-joined string split, "none" kept


def test_family_lookup_ignores_case():
    spec = specs_of(rec("EMP-x", True), rec("EMP-x", False))["EMP-x"]
    assert (spec.family, spec.type, spec.paper_metric) == ("EMP", "binary", "MCC")


def test_ranges_from_training_classes_from_both():
    specs = specs_of(
        rec("Stability-a", 0.0),
        rec("Stability-a", 10.0),
        rec("NoncodingRNAFamily-n", "tRNA"),
        eval_records=(
            rec("Stability-a", 50.0),
            rec("NoncodingRNAFamily-n", "miRNA"),
            rec("Fluorescence-f", 2.0),
            rec("Fluorescence-f", 3.5),
        ),
    )
    assert specs["Stability-a"].label_range == (0.0, 50.0)  # training and evaluation labels together
    assert specs["NoncodingRNAFamily-n"].classes == ["miRNA", "tRNA"]  # union
    assert specs["Fluorescence-f"].label_range == (2.0, 3.5)  # only in eval: eval's range


@pytest.mark.parametrize(
    ("labels", "type_", "metric"),
    [
        ([1.5, 2.5, 0.5], "regression", "Spearman"),
        (["1.5", "2.5"], "regression", "Spearman"),  # numeric strings are numbers
        ([0, 1, 1], "binary", "MCC"),  # only 0 and 1
        ([{"a": 1.0, "b": 2.0}], "multi_regression", "PCC"),
        ([True, False], "binary", "MCC"),
        (["Yes", "no", True], "binary", "MCC"),
        (["stable", "unstable"], "binary", "MCC"),  # negating-prefix pair
        (["A", "B"], "multiclass", "accuracy"),  # two values but no polarity
        (["A", "B", "C"], "multiclass", "accuracy"),
        ([["A"], ["B", "C"]], "multilabel", "macro_AUC"),
        (["A, B", "C"], "multilabel", "macro_AUC"),
    ],
)
def test_unknown_family_type_inference(labels, type_, metric):
    spec = specs_of(*(rec("new-task", v) for v in labels))["new-task"]
    assert (spec.type, spec.paper_metric, spec.threshold) == (type_, metric, None)


@pytest.mark.parametrize(
    ("inputs", "group"),
    [
        (["<dna>ACGT<dna> question", "<DNA>GG<DNA>"], "DNA"),
        (["<rna>ACGU<rna>"], "RNA"),
        (["<protein>MK<protein>"], "protein"),
        (["<rna>ac<rna> <dna>ACGT<dna>"], "multi-molecule"),
        (["<rna>ac<rna>", "<protein>MK<protein>"], "multi-molecule"),
        (["no sequence"], "unknown"),
    ],
)
def test_unknown_family_omics_group(inputs, group):
    spec = specs_of(*(rec("new-task", 1.0 + i, t) for i, t in enumerate(inputs)))["new-task"]
    assert spec.omics_group == group


@pytest.mark.parametrize(
    "labels",
    [[1.0, "high"], [1.0, {"a": 1.0}], [["a"], True], [{"a": 1.0}, {"b": 1.0}], [float("nan")], [{"a": "x"}]],
)
def test_incompatible_labels_raise_naming_the_task(labels):
    with pytest.raises(ValueError, match="mixed-task"):
        specs_of(*(rec("mixed-task", v) for v in labels))


def test_labels_that_do_not_fit_the_family_raise():
    with pytest.raises(ValueError, match="Stability-x"):
        specs_of(rec("Stability-x", "high"))
    with pytest.raises(ValueError, match="emp-x"):
        specs_of(rec("emp-x", 0.5), rec("emp-x", 2.0), rec("emp-x", 3.0))


def test_binary_family_without_polarity_falls_back_to_multiclass():
    spec = specs_of(rec("tf-h-x", "A"), rec("tf-h-x", "B"))["tf-h-x"]
    assert (spec.type, spec.paper_metric, spec.classes) == ("multiclass", "MCC", ["A", "B"])


def test_mixed_types_across_training_and_eval_raise():
    with pytest.raises(ValueError, match="new-task"):
        specs_of(rec("new-task", 1.0), eval_records=(rec("new-task", ["a"]),))


@pytest.mark.parametrize(
    "spec",
    [
        TaskSpec("sirnaEfficiency-s", "sirnaEfficiency", "regression", "mixed_score",
                 label_range=(0.0, 100.0), threshold=30.0, omics_group="multi-molecule"),
        TaskSpec("enhancer_activity-e", "enhancer_activity", "multi_regression", "PCC", keys=["hk", "dev"],
                 label_range={"hk": (-1.0, 2.0), "dev": (0.0, 3.5)}, omics_group="DNA"),
        TaskSpec("emp-H3", "emp", "binary", "MCC", classes=["negative", "positive"], omics_group="DNA"),
    ],
)  # fmt: skip
def test_taskspec_json_round_trip(spec):
    assert TaskSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_taskspec_rejects_unknown_type():
    with pytest.raises(ValueError, match="x-y"):
        TaskSpec("x-y", "x", "ranking", "MCC")


def out(task: str, label, output: str) -> dict:
    return {"task": task, "input": "", "output": output, "label": label}


def test_tf_h_and_tf_m_are_separate_families():
    specs = specs_of(rec("tf-h-0", "positive"), rec("tf-h-0", "negative"), rec("tf-m-1", "positive"),
                     rec("tf-m-1", "negative"))  # fmt: skip
    assert (specs["tf-h-0"].family, specs["tf-m-1"].family) == ("tf_h", "tf_m")
    assert (specs["tf-h-0"].type, specs["tf-h-0"].paper_metric) == ("binary", "MCC")


def test_fixed_key_order_for_the_papers_multi_output_tasks():
    # the first label lists dev first: the order stays (hk, dev) / (ON, OFF, ON_OFF), as the paper states them
    specs = specs_of(
        rec("enhancer_activity-e", {"dev": 1.0, "hk": 2.0}),
        rec("ProgrammableRNASwitches-p", {"ON_OFF": 0.3, "OFF": 0.9, "ON": 0.5}),
    )
    assert specs["enhancer_activity-e"].keys == ["hk", "dev"]
    assert specs["ProgrammableRNASwitches-p"].keys == ["ON", "OFF", "ON_OFF"]
    with pytest.raises(ValueError, match="enhancer_activity-x"):
        specs_of(rec("enhancer_activity-x", {"a": 1.0, "b": 2.0}))


def test_other_multi_output_tasks_take_the_order_their_reference_outputs_state():
    # labels list a first, but 2 of 3 outputs state b's value first (the third states too few numbers)
    specs = specs_of(
        out("new-task", {"a": 1.0, "b": 5.0}, "b is 5.0 and a is 1.0"),
        out("new-task", {"a": 2.0, "b": 7.5}, "7.49, then 2.01"),
        out("new-task", {"a": 3.0, "b": 8.0}, "a is 3"),
    )
    assert specs["new-task"].keys == ["b", "a"]
    assert specs_of(rec("other", {"a": 1.0, "b": 2.0}))["other"].keys == ["a", "b"]  # no outputs: label order


def test_ec_vocabulary_from_label_strings_of_both_files():
    specs = specs_of(rec("FunctionEC-e", "EC 2.7.11.1"), eval_records=(rec("FunctionEC-e", "EC 1.1.1.1, EC 3.4.21.-"),))
    assert specs["FunctionEC-e"].classes == ["1.1.1.1", "2.7.11.1", "3.4.21.-"]


def test_binary_class_words_from_reference_outputs():
    # "dissolves" is only in soluble answers, "clumps" only in insoluble ones; "protein" is in both
    records = [
        out("Solubility-s", "soluble", "The protein dissolves."),
        out("Solubility-s", "soluble", "This protein dissolves well."),
        out("Solubility-s", "insoluble", "The protein clumps."),
    ]
    spec = specs_of(*records)["Solubility-s"]
    assert (spec.positive_words, spec.negative_words) == (["dissolves", "this", "well"], ["clumps"])
    # three spellings (yes/true/no): words are not kept per polarity, so no class words
    three = specs_of(out("x-t", "yes", "sure thing"), out("x-t", "true", "sure"), out("x-t", "no", "nope"))["x-t"]
    assert (three.type, three.positive_words, three.negative_words) == ("binary", [], [])


@pytest.mark.parametrize(
    ("train", "evaluation", "baseline"),
    [
        ([("Stability-a", 1.0), ("Stability-a", 2.0), ("Stability-a", 6.0)], [("Stability-a", 100.0)], 3.0),
        ([], [("Stability-a", 1.0), ("Stability-a", 5.0)], 3.0),  # no training file: the evaluation labels'
        ([("emp-x", "positive"), ("emp-x", "negative"), ("emp-x", "negative")], [("emp-x", "positive")], False),
        ([("NoncodingRNAFamily-n", "tRNA"), ("NoncodingRNAFamily-n", "tRNA"), ("NoncodingRNAFamily-n", "miRNA")],
         [("NoncodingRNAFamily-n", "miRNA")], "tRNA"),
        ([("Modification-m", "m6A,Am"), ("Modification-m", ["Am", "m6A"]), ("Modification-m", "none")],
         [("Modification-m", "none")], ["Am", "m6A"]),
        ([("enhancer_activity-e", {"hk": 1.0, "dev": 4.0}), ("enhancer_activity-e", {"dev": 2.0, "hk": 3.0})],
         [], {"hk": 2.0, "dev": 3.0}),
    ],
)  # fmt: skip
def test_baseline_is_the_training_mean_or_majority(train, evaluation, baseline):
    train_records = [rec(t, v) for t, v in train]
    eval_records = tuple(rec(t, v) for t, v in evaluation)
    specs = specs_of(*train_records, eval_records=eval_records) if train else specs_of(*eval_records)
    assert next(iter(specs.values())).baseline == baseline


def test_summaries_saved_before_revision_2_still_load():
    old = {"n": 2, "kinds": {"number": 2}, "min": 1.0, "max": 3.0, "values": [1.0, 3.0], "keys": None,
           "key_ranges": {}, "classes": {}, "items": {}, "tags": []}  # fmt: skip
    spec = build_task_specs({"Stability-a": old}, summarize_records([rec("Stability-a", 5.0)]))["Stability-a"]
    assert (spec.label_range, spec.baseline) == ((1.0, 5.0), 5.0)  # no training total: the evaluation mean
