"""The scores of one task from normalized labels and parsed predictions (evaluation.md §2–3), for each shape of
task: regression outputs, single-label classes, label sets. The task types call them; pure numpy, no model.

Reporting convention: every unitless score (correlations, r², F1, accuracy, precision, recall, MCC,
AUC, Fmax, paper metric, Mixed Score) is ×100 and rounded to 2 decimals, like the paper's tables;
valid_rate is a fraction in [0, 1] (a rate, not a score; 4 decimals); MAE, RMSE, means and stds stay in
the task's own units; mae_scaled and range_mae are already on the Mixed Score's 0–100 scale. An
undefined diagnostic is None; in a paper metric an undefined correlation counts as 0 (coverage rule).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Protocol

import numpy as np

from omics.answers import binary_mapping, is_valid_number


class ScoredTask(Protocol):
    """What scoring reads of a task (omics.tasktypes.TaskSpec has it all)."""

    task: str
    type: str
    paper_metric: str
    keys: list[str]
    classes: list[str]
    label_range: tuple[float, float] | dict[str, tuple[float, float]] | None
    threshold: float | None

COLLAPSE_PRED_SHARE = 0.95  # one predicted class above this share of all predictions …
BALANCED_LABEL_SHARE = 0.70  # … while no label class is above this share → collapse warning
COLLAPSE_STD_RATIO = 0.10  # regression: prediction std below this fraction of the label std
MIXED_MAX_ABS = 1000.0  # the paper's Mixed Score (only it) treats |x| > 1000 as invalid (A.3.1)
# regression paper metric → the per-output raw score it averages (coverage-adjusted)
_REGRESSION_METRICS = {
    "PCC": "pearson",
    "R2": "r2",
    "mean_R2": "r2",
    "Spearman": "spearman",
    "mixed_score": "mixed",
}


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100.0 * float(x), 2)


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 2)


def _clip01(x: float) -> float:
    return min(max(float(x), 0.0), 1.0)


def _ratio(a: float, b: float) -> float:
    """a / b, 0 when b is 0 (sklearn's zero_division=0)."""
    return float(a) / float(b) if b else 0.0


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson r; None when undefined (fewer than 2 samples or a constant side)."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.clip(np.corrcoef(x, y)[0, 1], -1.0, 1.0))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank (scipy's rankdata, without importing scipy.stats)."""
    order = np.argsort(x, kind="stable")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return ranks


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    return None if len(x) < 2 else _pearson(_ranks(x), _ranks(y))


def _mixed(mae: float, range_mae: float, f1: float = 1.0) -> float:
    """0.5·(1 − MAE/100) + 0.5·F1·(1 − Range-MAE/100), each half clipped to [0, 1]; F1 = 1 gives the
    regression form."""
    return 0.5 * _clip01(1 - mae / 100) + 0.5 * _clip01(f1 * (1 - range_mae / 100))


def _threshold_terms(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """Paper A.3.1 in the task's units: MAE, Range-MAE over predictions in [0, threshold], F1 with
    positive = value < threshold."""
    err = np.abs(p - y)
    in_range = (p >= 0) & (p <= threshold)
    range_mae = min(float(err[in_range].mean()), 100.0) if in_range.any() else 100.0
    y_pos, p_pos = y < threshold, p < threshold
    tp, fp, fn = int((y_pos & p_pos).sum()), int((~y_pos & p_pos).sum()), int((y_pos & ~p_pos).sum())
    return min(float(err.mean()), 100.0), range_mae, _ratio(2 * tp, 2 * tp + fp + fn)


def _rescaled_terms(y: np.ndarray, p: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """The request's regression form: MAE and Range-MAE on the label range mapped to 0–100."""
    width = (hi - lo) or 1.0
    ys, ps = 100 * ((y - lo) / width), 100 * ((p - lo) / width)
    err = np.abs(ps - ys)
    in_range = (ps >= 0) & (ps <= 100)
    range_mae = min(float(err[in_range].mean()), 100.0) if in_range.any() else 100.0
    return min(float(err.mean()), 100.0), range_mae


def _regression_output(
    y: np.ndarray, p: np.ndarray, valid: np.ndarray, lo_hi: tuple[float, float], threshold: float | None
) -> tuple[dict[str, Any], dict[str, float]]:
    """Reported fields of one regression output, and its coverage-adjusted raw scores."""
    coverage = float(valid.mean())
    yv, pv = y[valid], p[valid]
    pearson, spearman = _pearson(yv, pv), _spearman(yv, pv)
    r2 = None if pearson is None else pearson**2
    any_valid = bool(valid.any())
    fields: dict[str, Any] = {
        "mae": float(np.abs(pv - yv).mean()) if any_valid else None,
        "rmse": float(np.sqrt(((pv - yv) ** 2).mean())) if any_valid else None,
        "pearson": _pct(pearson),
        "spearman": _pct(spearman),
        "r2": _pct(r2),
        "pred_mean": float(pv.mean()) if any_valid else None,
        "pred_std": float(pv.std()) if any_valid else None,
        "label_mean": float(y.mean()),
        "label_std": float(y.std()),
        "mae_scaled": None,
        "range_mae": None,
    }
    mixed_valid, mixed_coverage = 0.0, coverage
    if threshold is not None:
        fields["f1"] = None
        in_bounds = valid & (np.abs(np.nan_to_num(p)) <= MIXED_MAX_ABS)
        mixed_coverage = float(in_bounds.mean())
        if in_bounds.any():
            mae, range_mae, f1 = _threshold_terms(y[in_bounds], p[in_bounds], threshold)
            fields.update(mae_scaled=_round(mae), range_mae=_round(range_mae), f1=_pct(f1))
            mixed_valid = _mixed(mae, range_mae, f1)
    elif any_valid:
        mae, range_mae = _rescaled_terms(yv, pv, *lo_hi)
        fields.update(mae_scaled=_round(mae), range_mae=_round(range_mae))
        mixed_valid = _mixed(mae, range_mae)
    fields["mixed_score"] = _pct(mixed_valid * mixed_coverage)
    raw = {
        "pearson": (pearson or 0.0) * coverage,
        "spearman": (spearman or 0.0) * coverage,
        "r2": (r2 or 0.0) * coverage,
        "mixed": mixed_valid * mixed_coverage,
    }
    return fields, raw


def _regression_collapse(y: np.ndarray, p: np.ndarray) -> list[str]:
    """Warn when the valid predictions are all equal or spread < 10% as much as the labels."""
    if len(p) >= 2 and np.ptp(p) == 0:
        return [f"collapse: all {len(p)} valid predictions equal {p[0]:g}"]
    if y.std() > 0 and p.std() < COLLAPSE_STD_RATIO * y.std():
        return [f"collapse: prediction std {p.std():.4g} is below 10% of label std {y.std():.4g}"]
    return []


def score_regression(spec: ScoredTask, labels: list, predictions: list, multi: bool) -> dict[str, Any]:
    """One output, or (`multi`) one per spec.keys, each with its paper metric averaged over the outputs."""
    keys: list[Any] = list(spec.keys) if multi else [None]

    def valid_pred(pred: Any) -> bool:
        if not multi:
            return is_valid_number(pred)
        return isinstance(pred, dict) and all(is_valid_number(pred.get(k)) for k in keys)

    valid = np.array([valid_pred(p) for p in predictions], dtype=bool)
    outputs: dict[Any, dict[str, Any]] = {}
    raws: dict[Any, dict[str, float]] = {}
    warnings: list[str] = [] if valid.any() else ["no valid predictions"]
    for key in keys:
        y = np.array([float(lab[key] if multi else lab) for lab in labels])
        p = np.array(
            [
                float(pr[key] if multi else pr) if v else np.nan
                for pr, v in zip(predictions, valid, strict=True)
            ]
        )
        lo_hi = spec.label_range.get(key) if isinstance(spec.label_range, dict) else spec.label_range
        lo_hi = lo_hi or (float(y.min()), float(y.max()))  # no training summary: the labels' own range
        outputs[key], raws[key] = _regression_output(y, p, valid, lo_hi, spec.threshold)
        if valid.any():
            warnings += [(f"{key}: " if multi else "") + w for w in _regression_collapse(y, p[valid])]
    if spec.paper_metric not in _REGRESSION_METRICS:
        raise ValueError(f"task {spec.task}: paper metric {spec.paper_metric!r} is not a regression metric")
    raw_name = _REGRESSION_METRICS[spec.paper_metric]
    paper: dict[str, Any] = {
        "name": spec.paper_metric,
        "value": _pct(np.mean([r[raw_name] for r in raws.values()])),
    }
    body: dict[str, Any] = {
        "n_valid": int(valid.sum()),
        "paper_metric": paper,
        "mixed_score": _pct(np.mean([r["mixed"] for r in raws.values()])),
    }
    if multi:
        paper["per_output"] = {k: _pct(r[raw_name]) for k, r in raws.items()}
        body["outputs"] = outputs
    else:
        body.update(outputs[None])
    body["warnings"] = warnings
    return body


def _mcc(cm: np.ndarray) -> float:
    """Multi-class MCC (Gorodkin) from a confusion matrix; 0 when undefined."""
    cm = cm.astype(float)
    t, p, s = cm.sum(axis=1), cm.sum(axis=0), cm.sum()
    den = math.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((np.trace(cm) * s - t @ p) / den) if den else 0.0


def _class_collapse(pred_keys: list[Any], label_keys: list[Any]) -> list[str]:
    """Warn when one predicted class takes > 95% of all predictions while the labels are balanced
    (no label class above 70%)."""
    n = len(label_keys)
    preds = Counter(k for k in pred_keys if k is not None)
    if not preds:
        return []
    name, count = preds.most_common(1)[0]
    if (
        count > COLLAPSE_PRED_SHARE * n
        and Counter(label_keys).most_common(1)[0][1] <= BALANCED_LABEL_SHARE * n
    ):
        return [
            f"collapse: {100 * count / n:.1f}% of predictions are {name!r} while no label class exceeds 70%"
        ]
    return []


def _true_class_probability(
    correct: np.ndarray, valid: np.ndarray, probabilities: list[float] | None
) -> tuple[np.ndarray, str]:
    """p of the Mixed Score: the model's probability of the true class, or 1/0 for right/wrong."""
    if probabilities is None:
        return correct.astype(float), "hard"
    p = np.array([_clip01(x) if x is not None and math.isfinite(x) else 0.0 for x in probabilities])
    p[~valid] = 0.0  # an invalid prediction is wrong, whatever the model's probability
    return p, "model"


def _binary_names(spec: ScoredTask) -> dict[bool, str]:
    """Display names of the two binary classes: the task's own spellings where it has them."""
    names = {False: "negative", True: "positive"}
    mapping = binary_mapping(spec.classes) or {}
    for spelling in sorted(spec.classes, reverse=True):
        if spelling.strip().lower() in mapping:
            names[mapping[spelling.strip().lower()]] = spelling
    return names


def score_single_label(
    spec: ScoredTask, labels: list, predictions: list, probabilities: list[float] | None, binary: bool
) -> dict[str, Any]:
    """One class per sample: bool for a `binary` task (an invalid answer counts as the opposite class), else a
    class name (an invalid answer is a class of its own in the confusion matrix)."""
    valid = np.array([isinstance(p, bool) if binary else isinstance(p, str) for p in predictions], dtype=bool)
    if binary:
        names = _binary_names(spec)
        classes: list[Any] = [False, True]
        # an invalid binary prediction is read as the class opposite to the label
        y_hat: list[Any] = [p if v else not t for p, v, t in zip(predictions, valid, labels, strict=True)]
    else:
        names = {}
        y_hat = [p if v else None for p, v in zip(predictions, valid, strict=True)]
        classes = sorted(set(spec.classes) | set(labels) | {p for p in y_hat if p is not None})
    name = [names.get(c, c) for c in classes]
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    cm = np.zeros((k + 1, k + 1), dtype=np.int64)  # last row/column: invalid (multi-class only)
    for t, p in zip(labels, y_hat, strict=True):
        cm[index[t], k if p is None else index[p]] += 1
    tp, pred_tot, true_tot = np.diag(cm)[:k], cm[:, :k].sum(axis=0), cm[:k].sum(axis=1)
    present = true_tot > 0  # macro averages run over the classes present in the labels
    precision = np.array([_ratio(a, b) for a, b in zip(tp, pred_tot, strict=True)])
    recall = np.array([_ratio(a, b) for a, b in zip(tp, true_tot, strict=True)])
    f1s = np.array([_ratio(2 * a, b + c) for a, b, c in zip(tp, pred_tot, true_tot, strict=True)])
    f1 = float(f1s[index[True]]) if binary else float(f1s[present].mean())
    correct = np.array([t == p for t, p in zip(labels, y_hat, strict=True)], dtype=bool)
    p_true, source = _true_class_probability(correct, valid, probabilities)
    mae = 100 * float((1 - p_true).mean())
    mixed = _mixed(mae, mae, f1)
    accuracy = float(correct.mean())
    mcc = _mcc(cm)
    shown = k + 1 if (~valid).any() and not binary else k
    scores = {"MCC": mcc, "accuracy": accuracy, "mixed_score": mixed}
    if spec.paper_metric not in scores:
        raise ValueError(
            f"task {spec.task}: paper metric {spec.paper_metric!r} is not defined for {spec.type}"
        )
    original = [names.get(p, p) if v else None for p, v in zip(predictions, valid, strict=True)]
    distribution = dict.fromkeys(name, 0)
    distribution.update(Counter(n for n in original if n is not None))
    distribution["invalid"] = int((~valid).sum())
    return {
        "n_valid": int(valid.sum()),
        "paper_metric": {"name": spec.paper_metric, "value": _pct(scores[spec.paper_metric])},
        "mixed_score": _pct(mixed),
        "accuracy": _pct(accuracy),
        "f1": _pct(f1),
        "precision_macro": _pct(precision[present].mean()),
        "recall_macro": _pct(recall[present].mean()),
        "mcc": _pct(mcc),
        "mae_scaled": _round(mae),
        "range_mae": _round(mae),
        "confusion_matrix": {
            "labels": (name + ["invalid"])[:shown],
            "matrix": cm[:shown, :shown].tolist(),
        },
        "prediction_distribution": distribution,
        "label_distribution": {n: int(c) for n, c in zip(name, true_tot, strict=True)},
        "probability_source": source,
        "warnings": ([] if valid.any() else ["no valid predictions"])
        + _class_collapse(original, [names.get(t, t) for t in labels]),
    }


def _binary_score_auc(tp: int, n_pred: int, n_true: int, n: int) -> float:
    """ROC-AUC of 0/1 scores: (1 + TPR − FPR)/2, which is the rank-sum formula with ties at half credit."""
    return 0.5 * (1 + tp / n_true - (n_pred - tp) / (n - n_true))


def score_multilabel(
    spec: ScoredTask, labels: list, predictions: list, probabilities: list[float] | None
) -> dict[str, Any]:
    valid = np.array(
        [isinstance(p, list | tuple | set) and all(isinstance(x, str) for x in p) for p in predictions],
        dtype=bool,
    )
    ys = [set(lab) for lab in labels]
    ps = [set(p) if v else set() for p, v in zip(predictions, valid, strict=True)]
    hits = np.array([len(y & p) for y, p in zip(ys, ps, strict=True)], dtype=float)
    classes = sorted(set(spec.classes).union(*ys, *ps))
    correct = np.array([v and y == p for y, p, v in zip(ys, ps, valid, strict=True)], dtype=bool)
    f1 = float(np.mean([_ratio(2 * h, len(y) + len(p)) for h, y, p in zip(hits, ys, ps, strict=True)]))
    # per-class counts without an n × classes matrix (FunctionEC has thousands of EC numbers)
    tp_c = Counter(c for y, p in zip(ys, ps, strict=True) for c in y & p)
    pred_c, true_c = Counter(c for p in ps for c in p), Counter(c for y in ys for c in y)
    tp, pred_tot, true_tot = (
        np.array([cnt[c] for c in classes], dtype=int) for cnt in (tp_c, pred_c, true_c)
    )
    present = true_tot > 0
    precision = np.array([_ratio(a, b) for a, b in zip(tp, pred_tot, strict=True)])
    recall = np.array([_ratio(a, b) for a, b in zip(tp, true_tot, strict=True)])
    # Fmax, protein-function convention at the one threshold hard predictions have: precision over the
    # samples with at least one predicted term, recall over all samples.
    with_pred = [i for i, p in enumerate(ps) if p]
    fmax_p = float(np.mean([hits[i] / len(ps[i]) for i in with_pred])) if with_pred else 0.0
    fmax_r = float(np.mean([_ratio(h, len(y)) for h, y in zip(hits, ys, strict=True)]))
    fmax = _ratio(2 * fmax_p * fmax_r, fmax_p + fmax_r)
    # macro ROC-AUC on 0/1 predictions, skipping classes whose labels are all one value
    n = len(ys)
    aucs = [
        _binary_score_auc(tp[j], pred_tot[j], true_tot[j], n)
        for j in range(len(classes))
        if 0 < true_tot[j] < n
    ]
    macro_auc = float(np.mean(aucs)) if aucs else None
    p_true, source = _true_class_probability(correct, valid, probabilities)
    mae = 100 * float((1 - p_true).mean())
    mixed = _mixed(mae, mae, f1)
    scores = {
        "macro_AUC": macro_auc or 0.0,
        "Fmax": fmax,
        "accuracy": float(correct.mean()),
        "mixed_score": mixed,
    }
    if spec.paper_metric not in scores:
        raise ValueError(
            f"task {spec.task}: paper metric {spec.paper_metric!r} is not defined for multilabel"
        )
    warnings = [] if valid.any() else ["no valid predictions"]
    if macro_auc is None:
        warnings.append("macro AUC undefined: no class has both positive and negative labels")
    join = ", ".join
    warnings += _class_collapse(
        [join(sorted(p)) if v else None for p, v in zip(ps, valid, strict=True)],
        [join(sorted(y)) for y in ys],
    )
    distribution = {c: int(n) for c, n in zip(classes, pred_tot, strict=True)}
    distribution["invalid"] = int((~valid).sum())
    return {
        "n_valid": int(valid.sum()),
        "paper_metric": {"name": spec.paper_metric, "value": _pct(scores[spec.paper_metric])},
        "mixed_score": _pct(mixed),
        "accuracy": _pct(correct.mean()),
        "f1": _pct(f1),
        "precision_macro": _pct(precision[present].mean()) if present.any() else None,
        "recall_macro": _pct(recall[present].mean()) if present.any() else None,
        "fmax": _pct(fmax),
        "macro_auc": _pct(macro_auc),
        "mae_scaled": _round(mae),
        "range_mae": _round(mae),
        "prediction_distribution": distribution,
        "label_distribution": {c: int(n) for c, n in zip(classes, true_tot, strict=True)},
        "probability_source": source,
        "warnings": warnings,
    }
