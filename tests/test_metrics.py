"""Scores against hand-computed values (evaluation.md §2–3); the arithmetic is in the comments."""

from __future__ import annotations

import json
import math

import pytest

from omics.evaluate.metrics import score_task, summarize_overall
from omics.evaluate.tasks import TaskSpec


def spec(type_: str, metric: str, **kw) -> TaskSpec:
    return TaskSpec(task="t-x", family="t", type=type_, paper_metric=metric, **kw)


def score(s: TaskSpec, labels, preds, probs=None) -> dict:
    result = score_task(s, labels, preds, probs)
    json.dumps(result, allow_nan=False)  # always JSON-serialisable, never NaN
    return result


SIRNA = TaskSpec(
    "sirnaEfficiency-s", "sirnaEfficiency", "regression", "mixed_score",
    label_range=(0.0, 100.0), threshold=30.0, omics_group="multi-molecule",
)  # fmt: skip


def test_sirna_paper_mixed_score():
    # valid pairs (label, pred): (10,20) (25,35) (40,28) (80,70); the 4th sample is invalid.
    # |err| = 10, 10, 12, 10 → MAE = 42/4 = 10.5; RMSE = sqrt((100+100+144+100)/4) = sqrt(111)
    # predictions in [0, 30]: 20, 28 → Range-MAE = (10 + 12)/2 = 11
    # label < 30: T T F F; pred < 30: T F T F → TP 1, FP 1, FN 1 → F1 = 2/(2+1+1) = 0.5
    # mixed_valid = 0.5·(1 − 0.105) + 0.5·0.5·(1 − 0.11) = 0.4475 + 0.2225 = 0.67; × 4/5 = 0.536
    r = score(SIRNA, [10.0, 25.0, 40.0, 60.0, 80.0], [20.0, 35.0, 28.0, None, 70.0])
    assert (r["n"], r["n_valid"], r["valid_rate"]) == (5, 4, 0.8)
    assert (r["mae_scaled"], r["range_mae"], r["f1"]) == (10.5, 11.0, 50.0)
    assert r["mixed_score"] == 53.6
    assert r["paper_metric"] == {"name": "mixed_score", "value": 53.6}
    assert r["mae"] == 10.5
    assert r["rmse"] == pytest.approx(math.sqrt(111))


def test_sirna_range_mae_without_in_range_predictions_is_100():
    # preds 50, 60 (none in [0, 30]) vs labels 40, 70: MAE = 10, Range-MAE = 100,
    # F1: no label and no prediction below 30 → 0 → mixed = 0.5·0.9 + 0 = 0.45
    r = score(SIRNA, [40.0, 70.0], [50.0, 60.0])
    assert (r["mae_scaled"], r["range_mae"], r["f1"], r["mixed_score"]) == (10.0, 100.0, 0.0, 45.0)


def test_regression_rescaled_mixed_score_and_correlations():
    s = spec("regression", "Spearman", label_range=(0.0, 50.0))
    # on 0–100 by [0, 50]: labels 20, 40, 60; preds 30, 40, 120 → |err| 10, 0, 60 → MAE = 70/3
    # preds inside [0, 100]: 30, 40 → Range-MAE = (10 + 0)/2 = 5
    # mixed = 0.5·(1 − 0.23333) + 0.5·(1 − 0.05) = 0.38333 + 0.475 = 0.85833
    r = score(s, [10.0, 20.0, 30.0], [15.0, 20.0, 60.0])
    assert (r["mae_scaled"], r["range_mae"], r["mixed_score"]) == (23.33, 5.0, 85.83)
    assert "f1" not in r
    # ranks identical → Spearman 1; Pearson: dx = -10,0,10, dy = -16.67,-11.67,28.33,
    # r = 450 / sqrt(200 · 1216.67) = 0.912246, r² = 0.832193
    assert (r["spearman"], r["pearson"], r["r2"]) == (100.0, 91.22, 83.22)
    assert r["paper_metric"] == {"name": "Spearman", "value": 100.0}
    assert r["mae"] == pytest.approx(35 / 3)  # (5 + 0 + 30)/3 in task units


def test_regression_zero_width_range_counts_as_one():
    s = spec("regression", "Spearman", label_range=(5.0, 5.0))
    # width 1: labels → 0, 0; preds 5.5 → 50, 4 → -100: MAE = 75; in range only 50 → Range-MAE 50
    # mixed = 0.5·0.25 + 0.5·0.5 = 0.375
    r = score(s, [5.0, 5.0], [5.5, 4.0])
    assert (r["mae_scaled"], r["range_mae"], r["mixed_score"]) == (75.0, 50.0, 37.5)


def test_regression_range_from_labels_and_constant_predictions():
    s = spec("regression", "R2")
    # no label_range: [0, 10] from the labels; preds 5, 5 → 50, 50 vs 0, 100: MAE 50, Range-MAE 50
    # mixed = 0.5·0.5 + 0.5·0.5 = 0.5; constant predictions: r undefined → paper metric 0
    r = score(s, [0.0, 10.0], [5.0, 5.0])
    assert r["mixed_score"] == 50.0
    assert r["pearson"] is None and r["r2"] is None
    assert r["paper_metric"]["value"] == 0.0
    assert any("collapse" in w for w in r["warnings"])


@pytest.mark.parametrize(
    ("metric", "preds", "value"),
    [
        ("Spearman", [1.0, 2.0, 3.0, None], 75.0),  # ρ = 1 on 3 valid, × 3/4
        ("R2", [1.0, 2.0, None, None], 50.0),  # r² = 1 on 2 valid, × 2/4
        ("PCC", [4.0, 3.0, 2.0, 1.0], -100.0),  # r = -1, all valid
        ("Spearman", [1.0, None, None, None], 0.0),  # < 2 valid: undefined → 0
    ],
)
def test_coverage_rule(metric, preds, value):
    r = score(spec("regression", metric), [1.0, 2.0, 3.0, 4.0], preds)
    assert r["paper_metric"]["value"] == value


def test_regression_mixed_score_coverage():
    # range [1, 4] from labels; the 3 valid predictions are exact → mixed_valid = 1; × 3/4
    r = score(spec("regression", "Spearman"), [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, None])
    assert r["mixed_score"] == 75.0


def test_nan_and_inf_are_invalid_huge_numbers_are_not():
    # valid: 1 (label 1) and 2000 (label 4); ρ on 2 points = 1 → × 2/4 = 50
    # range [1, 4]: labels' 0, 100; preds' 0, 66633.3 → MAE capped at 100; Range-MAE over the one
    # prediction inside [0, 100] = 0 → mixed = 0.5·0 + 0.5·1 = 0.5, × 2/4 = 25
    preds = [1.0, float("nan"), float("inf"), 2000.0]
    r = score(spec("regression", "Spearman"), [1.0, 2.0, 3.0, 4.0], preds)
    assert (r["n_valid"], r["valid_rate"], r["paper_metric"]["value"]) == (2, 0.5, 50.0)
    assert (r["mae_scaled"], r["range_mae"], r["mixed_score"]) == (100.0, 0.0, 25.0)


def test_huge_numbers_are_invalid_only_in_the_paper_mixed_score():
    # siRNA: 1500 is a valid prediction (valid_rate 1, MAE in units (10 + 1460)/2 = 735) but the paper's
    # Mixed Score drops |x| > 1000: on (10, 20) alone MAE 10, Range-MAE 10, F1 1 → 0.5·0.9 + 0.5·0.9 = 0.9,
    # × 1/2 = 45
    r = score(SIRNA, [10.0, 40.0], [20.0, 1500.0])
    assert (r["n_valid"], r["valid_rate"], r["mae"]) == (2, 1.0, 735.0)
    assert (r["mae_scaled"], r["range_mae"], r["f1"], r["mixed_score"]) == (10.0, 10.0, 100.0, 45.0)
    assert r["paper_metric"]["value"] == 45.0
    # the same stray number in an R² task is just a bad prediction: r² of (1,1) (2,2) (3,1500) = 0.7505,
    # nothing invalidated
    r2 = score(spec("regression", "R2"), [1.0, 2.0, 3.0], [1.0, 2.0, 1500.0])
    assert (r2["valid_rate"], r2["paper_metric"]["value"]) == (1.0, 75.05)


def test_no_valid_prediction_regression():
    r = score(spec("regression", "Spearman"), [1.0, 2.0], [None, None])
    assert (r["n_valid"], r["valid_rate"], r["paper_metric"]["value"], r["mixed_score"]) == (0, 0.0, 0.0, 0.0)
    assert r["mae"] is None and r["mae_scaled"] is None
    assert r["warnings"] == ["no valid predictions"]


def test_regression_collapse_small_spread():
    # labels 0,10,20,30: std = sqrt((225+25+25+225)/4) = 11.18
    # preds 14,15,16,15: std = sqrt(0.5) = 0.71 < 10% of 11.18
    r = score(spec("regression", "Spearman"), [0.0, 10.0, 20.0, 30.0], [14.0, 15.0, 16.0, 15.0])
    assert len(r["warnings"]) == 1 and "collapse" in r["warnings"][0]
    r = score(spec("regression", "Spearman"), [0.0, 10.0, 20.0, 30.0], [0.0, 12.0, 18.0, 30.0])
    assert r["warnings"] == []


def test_two_output_regression_pcc_each():
    s = spec("multi_regression", "PCC", keys=["hk", "dev"], label_range={"hk": (1.0, 3.0), "dev": (1.0, 3.0)})
    labels = [{"hk": h, "dev": d} for h, d in ((1.0, 3.0), (2.0, 1.0), (3.0, 2.0), (2.0, 2.0))]
    preds = [{"hk": 1.0, "dev": 1.0}, {"hk": 2.0, "dev": 2.0}, {"hk": 3.0, "dev": 3.0}, None]
    # hk: r = 1 → × 3/4 = 75; dev: dx = 1,-1,0, dy = -1,0,1 → r = -1/2 → × 3/4 = -37.5; mean 18.75
    # hk scaled exactly right → mixed 1 × 3/4 = 0.75; dev on [1,3]: labels 100,0,50, preds 0,50,100
    # → MAE = Range-MAE = 200/3 → mixed = 1/3 × 3/4 = 0.25; task mixed = (0.75 + 0.25)/2 = 0.5
    r = score(s, labels, preds)
    assert r["paper_metric"] == {"name": "PCC", "value": 18.75, "per_output": {"hk": 75.0, "dev": -37.5}}
    assert (r["outputs"]["hk"]["mixed_score"], r["outputs"]["dev"]["mixed_score"], r["mixed_score"]) == (
        75.0, 25.0, 50.0,
    )  # fmt: skip
    assert (r["outputs"]["hk"]["pearson"], r["outputs"]["dev"]["pearson"]) == (100.0, -50.0)
    assert r["n_valid"] == 3
    # a prediction missing a key is invalid
    assert score(s, labels[:2], [{"hk": 1.0}, {"hk": 2.0, "dev": 1.0}])["n_valid"] == 1


def test_three_output_regression_mean_r2():
    s = spec("multi_regression", "mean_R2", keys=["ON", "OFF", "ON_OFF"])
    labels = [{"ON": v, "OFF": v, "ON_OFF": v} for v in (0.0, 1.0, 2.0)]
    triples = ((0.0, 2.0, 0.0), (1.0, 1.0, 0.0), (2.0, 0.0, 1.0))
    preds = [{"ON": a, "OFF": b, "ON_OFF": c} for a, b, c in triples]
    # ON r = 1, OFF r = -1 → r² = 1; ON_OFF: dx = -1,0,1, dy = -1/3,-1/3,2/3 → r = 1/(√2·√(2/3)) = 0.8660
    # → r² = 0.75; mean r² = (1 + 1 + 0.75)/3 = 0.916667
    r = score(s, labels, preds)
    assert r["paper_metric"]["value"] == 91.67
    assert r["paper_metric"]["per_output"] == {"ON": 100.0, "OFF": 100.0, "ON_OFF": 75.0}


BIN = spec("binary", "MCC", classes=["negative", "positive"])
BIN_LABELS = [True, True, False, False, True, False]
BIN_PREDS = [True, None, False, True, True, False]


def test_binary_scores_invalid_as_opposite_class():
    # the invalid prediction (label True) is read as False → predictions T F F T T F
    # TP 2 (0, 4), FN 1 (1), FP 1 (3), TN 2 (2, 5); MCC = (2·2 − 1·1)/sqrt(3·3·3·3) = 3/9
    # accuracy 4/6; F1 = 4/(4+1+1); precision (T) 2/3, (F) 2/3; recall (T) 2/3, (F) 2/3
    # Mixed (hard): MAE = 100·2/6 → 0.5·(2/3) + 0.5·(2/3)·(2/3) = 5/9
    r = score(BIN, BIN_LABELS, BIN_PREDS)
    assert r["paper_metric"] == {"name": "MCC", "value": 33.33}
    assert (r["mcc"], r["accuracy"], r["f1"], r["precision_macro"], r["recall_macro"]) == (
        33.33, 66.67, 66.67, 66.67, 66.67,
    )  # fmt: skip
    assert (r["mae_scaled"], r["range_mae"], r["mixed_score"]) == (33.33, 33.33, 55.56)
    assert r["confusion_matrix"] == {"labels": ["negative", "positive"], "matrix": [[2, 1], [1, 2]]}
    assert r["prediction_distribution"] == {"negative": 2, "positive": 3, "invalid": 1}
    assert r["label_distribution"] == {"negative": 3, "positive": 3}
    assert (r["probability_source"], r["valid_rate"], r["warnings"]) == ("hard", 0.8333, [])


def test_binary_mixed_score_with_model_probabilities():
    # p(true class) = 0.9, [0.8 but invalid → 0], 0.6, 0.3, 1.0, [None → 0]
    # mean(1 − p) = (0.1 + 1 + 0.4 + 0.7 + 0 + 1)/6 = 3.2/6 → MAE = 53.33
    # mixed = 0.5·(1 − 0.5333) + 0.5·(2/3)·(1 − 0.5333) = 0.23333 + 0.15556 = 0.38889
    r = score(BIN, BIN_LABELS, BIN_PREDS, [0.9, 0.8, 0.6, 0.3, 1.0, None])
    assert (r["probability_source"], r["mae_scaled"], r["mixed_score"]) == ("model", 53.33, 38.89)


def test_binary_bool_spellings_and_one_class_labels():
    s = spec("binary", "accuracy", classes=["false", "true"])
    # labels all True; preds T F T: MCC: t = (0, 3), p = (1, 2), trace 2, n 3 → 2·3 − 3·2 = 0 → 0
    # F1 = 2·2/(2·2 + 0 + 1) = 0.8; macro over the classes in the labels (True only): P = 1, R = 2/3
    r = score(s, [True, True, True], [True, False, True])
    assert (r["paper_metric"]["value"], r["mcc"], r["f1"]) == (66.67, 0.0, 80.0)
    assert (r["precision_macro"], r["recall_macro"]) == (100.0, 66.67)
    assert r["confusion_matrix"]["labels"] == ["false", "true"]


def test_binary_collapse_warning_only_when_labels_balanced():
    balanced = [True, False] * 5
    r = score(BIN, balanced, [True] * 10)  # 100% "positive" while labels are 50/50
    assert any("collapse" in w for w in r["warnings"])
    skewed = [True] * 8 + [False] * 2  # 80% one class: not balanced, no warning
    assert score(BIN, skewed, [True] * 10)["warnings"] == []


def test_no_valid_prediction_binary():
    # every prediction is read as the opposite class: accuracy 0, MCC = −1
    r = score(BIN, [True, False], [None, None])
    assert (r["n_valid"], r["accuracy"], r["mcc"], r["mixed_score"]) == (0, 0.0, -100.0, 0.0)
    assert r["warnings"] == ["no valid predictions"]


def test_multiclass_with_invalid():
    s = spec("multiclass", "accuracy", classes=["a", "b", "c"])
    # cm (rows true a,b,c,invalid; cols pred): a→a, a→b, b→b, c→invalid
    # accuracy 2/4; F1: a 2·1/(1+2) = 2/3, b 2·1/(2+1) = 2/3, c 0 → macro 4/9 = 0.4444
    # precision a 1, b 1/2, c 0 → 0.5; recall a 1/2, b 1, c 0 → 0.5
    # MCC: t = (2,1,1,0), p = (1,2,0,1), trace 2, n 4 → (2·4 − (2+2+0+0)) / sqrt((16−6)(16−6)) = 0.4
    # mixed (hard): MAE 50 → 0.5·0.5 + 0.5·(4/9)·0.5 = 0.36111
    r = score(s, ["a", "a", "b", "c"], ["a", "b", "b", None])
    assert (r["accuracy"], r["f1"], r["precision_macro"], r["recall_macro"], r["mcc"]) == (
        50.0, 44.44, 50.0, 50.0, 40.0,
    )  # fmt: skip
    assert r["mixed_score"] == 36.11
    assert r["confusion_matrix"] == {
        "labels": ["a", "b", "c", "invalid"],
        "matrix": [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]],
    }
    assert r["prediction_distribution"] == {"a": 1, "b": 2, "c": 0, "invalid": 1}


def test_multiclass_one_class_in_labels():
    s = spec("multiclass", "accuracy", classes=["miRNA", "tRNA"])
    # labels all tRNA; macro-F1 over tRNA only: TP 1, predicted 1, true 3 → 2/(1+3) = 0.5
    # MCC: t = (0,3,0), p = (1,1,1) → 9 − 9 = 0 in the denominator → 0
    r = score(s, ["tRNA"] * 3, ["tRNA", "miRNA", None])
    assert (r["accuracy"], r["f1"], r["mcc"]) == (33.33, 50.0, 0.0)


MOD = spec("multilabel", "macro_AUC", classes=["Am", "Psi", "m6A", "none"])


def test_multilabel_with_none_and_macro_auc_skipping_constant_classes():
    labels = [["m6A"], ["none"], ["Am", "m6A"], ["none"]]
    preds = [["m6A"], ["m6A"], ["Am"], None]
    # AUC with 0/1 scores = (1 + TPR − FPR)/2
    # m6A labels 1010, preds 1100: TPR 1/2, FPR 1/2 → 0.5; none labels 0101, preds 0000 → 0.5;
    # Am labels 0010, preds 0010 → 1; Psi labels all 0 → skipped. macro = 2/3
    # accuracy (exact set) 1/4; sample F1: 1, 0, 2·1/(2+1), 0 → (5/3)/4 = 0.41667
    # Fmax: precision over samples with predictions 1, 0, 1 → 2/3; recall 1, 0, 1/2, 0 → 0.375
    #       F = 2·(2/3)·0.375/(2/3 + 0.375) = 0.48
    # precision per class in labels: Am 1/1, m6A 1/2, none 0 → 0.5; recall Am 1, m6A 1/2, none 0 → 0.5
    # mixed (hard, exact set): MAE 75 → 0.5·0.25 + 0.5·0.41667·0.25 = 0.17708
    r = score(MOD, labels, preds)
    assert r["paper_metric"] == {"name": "macro_AUC", "value": 66.67}
    assert (r["macro_auc"], r["accuracy"], r["f1"], r["fmax"]) == (66.67, 25.0, 41.67, 48.0)
    assert (r["precision_macro"], r["recall_macro"], r["mixed_score"]) == (50.0, 50.0, 17.71)
    assert r["prediction_distribution"] == {"Am": 1, "Psi": 0, "m6A": 2, "none": 0, "invalid": 1}
    assert r["label_distribution"] == {"Am": 1, "Psi": 0, "m6A": 2, "none": 2}
    assert "confusion_matrix" not in r and "mcc" not in r


def test_macro_auc_undefined_when_every_class_is_constant():
    # m6A is in every label (all 1), the others in none (all 0): every class skipped → 0 + warning
    r = score(MOD, [["m6A"], ["m6A"]], [["m6A"], ["none"]])
    assert (r["macro_auc"], r["paper_metric"]["value"]) == (None, 0.0)
    assert any("AUC undefined" in w for w in r["warnings"])


def test_fmax_function_ec():
    s = TaskSpec("FunctionEC-e", "FunctionEC", "multilabel", "Fmax", classes=["1.1.1.1", "2.7.11.1"])
    labels = [["1.1.1.1"], ["2.7.11.1", "3.4.21.4"], ["1.1.1.1"]]
    preds = [["1.1.1.1", "1.2.3.4"], ["2.7.11.1"], None]
    # precision over samples with predictions: 1/2, 1/1 → 0.75; recall over all: 1, 1/2, 0 → 0.5
    # Fmax = 2·0.75·0.5/1.25 = 0.6
    r = score(s, labels, preds)
    assert r["paper_metric"] == {"name": "Fmax", "value": 60.0}


def test_multilabel_collapse_on_one_set():
    labels = [["m6A"], ["none"]] * 5
    r = score(MOD, labels, [["none"]] * 10)
    assert any("collapse" in w and "none" in w for w in r["warnings"])


def test_input_errors():
    with pytest.raises(ValueError, match="t-x"):
        score_task(BIN, [True, False], [True])
    with pytest.raises(ValueError, match="t-x"):
        score_task(BIN, ["positive"], [True])  # labels must be normalized
    with pytest.raises(ValueError, match="t-x"):
        score_task(BIN, [], [])
    with pytest.raises(ValueError, match="Fmax"):
        score_task(spec("binary", "Fmax"), [True], [True])


def test_summarize_overall():
    results = {
        "a": {"omics_group": "DNA", "n": 10, "mixed_score": 50.0},
        "b": {"omics_group": "DNA", "n": 5, "mixed_score": 30.0},
        "c": {"omics_group": "RNA", "n": 2, "mixed_score": 80.0},
        "d": {"omics_group": "unknown", "n": 1, "mixed_score": 10.0},
    }
    # overall (50 + 30 + 80 + 10)/4 = 42.5; DNA (50 + 30)/2 = 40; unknown is not a group
    assert summarize_overall(results) == {
        "mixed_score_mean": 42.5,
        "by_omics": {"DNA": 40.0, "RNA": 80.0},
        "n_tasks": 4,
        "n_examples": 18,
    }


def test_spearman_ties_share_their_average_rank():
    from scipy.stats import spearmanr

    # ranks: labels 1, 2.5, 2.5, 4; predictions 1.5, 1.5, 3, 4 (ties averaged, as scipy's rankdata)
    labels, preds = [1.0, 2.0, 2.0, 3.0], [1.0, 1.0, 2.0, 3.0]
    r = score(spec("regression", "Spearman"), labels, preds)
    assert r["spearman"] == round(100 * spearmanr(labels, preds)[0], 2) == 83.33
