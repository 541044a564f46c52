"""Parsed answers → every score of evaluation.md §2–4, and `omics score` for anyone's outputs.

Everything after generation is a pure function of the rows, so `omics score` recomputes the exact same
metrics without a model or a GPU. Nothing here imports torch: scoring a 244k-line file takes seconds.
"""

from __future__ import annotations

import ast
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from omics.answers import extract_answer
from omics.data.labels import training_label_summary
from omics.data.validate import DataReport, text_lines
from omics.errors import UserError
from omics.evaluate.metrics import baseline_scores, paper_table, score_task, summarize_overall
from omics.evaluate.parse import normalize_label, parse_prediction
from omics.evaluate.report import format_table, write_metrics, write_predictions
from omics.evaluate.tasks import build_task_specs
from omics.labels import summarize_records
from omics.tasktypes import TaskSpec

PAPER_OUTPUT_FIELDS = ("model_output", "result")  # the paper evaluator's name for the answer, and its alias
REFERENCE_EXAMPLES = 3  # reference answers named when they do not parse back
NUMBER_TOLERANCE = 0.005  # a reference answer may state its numeric label rounded to 2 decimals


def training_summary(train_data: Path | None, metrics_dir: Path) -> dict | None:
    """Per-task label summary of the training data: from --train-data, else the one the training run saved."""
    if train_data is not None:
        return training_label_summary(train_data)
    saved = metrics_dir / "data_report.json"
    return json.loads(saved.read_text()).get("task_summary") if saved.is_file() else None


def _specs(rows: list[dict], train_summary: dict | None) -> dict[str, TaskSpec]:
    eval_summary = summarize_records(rows)
    return build_task_specs(train_summary or eval_summary, eval_summary if train_summary else None)


def parse_rows(rows: list[dict], specs: dict[str, TaskSpec], reasoning: bool) -> None:
    """Parse every generated text, in place: prediction, valid, format_ok (Stage 3 only)."""
    for row in rows:
        answer, format_ok = extract_answer(row["generated"]) if reasoning else (row["generated"], None)
        row["prediction"] = parse_prediction(answer, specs[row["task"]])
        row["valid"] = row["prediction"] is not None
        row["format_ok"] = format_ok


def _same(parsed: Any, label: Any) -> bool:
    """Does a parsed reference answer equal its label (numbers up to the answers' rounding)?"""
    def close(a: Any, b: Any) -> bool:
        return isinstance(a, float) and math.isclose(a, b, rel_tol=1e-6, abs_tol=NUMBER_TOLERANCE)

    if isinstance(label, dict):
        return isinstance(parsed, dict) and all(close(parsed.get(k), v) for k, v in label.items())
    if isinstance(label, float):
        return close(parsed, label)
    return parsed == label


def reference_check(output: str, label: Any, spec: TaskSpec, reasoning: bool) -> Any:
    """True when a reference answer parses back to its own label, else what it parsed as."""
    parsed = parse_prediction(extract_answer(output)[0] if reasoning else output, spec)
    return True if _same(parsed, label) else parsed


def reference_round_trip(rows: list[dict], labels: list, spec: TaskSpec, reasoning: bool) -> dict[str, Any] | None:
    """§4: the share of reference outputs (`output`) that parse back to their own label, with examples of
    those that do not; None when the rows carry no reference outputs. A row may carry its verdict already
    (`reference_parsed`, streamed evaluation: the output text is then kept only when it fails)."""
    checked = [(r.get("output"), r["reference_parsed"] if "reference_parsed" in r else
                reference_check(r["output"], label, spec, reasoning), label)
               for r, label in zip(rows, labels, strict=True) if "reference_parsed" in r or r.get("output")]
    if not checked:
        return None
    failures = [{"output": output, "parsed": parsed, "label": label}
                for output, parsed, label in checked if parsed is not True]
    return {"reference_parse_rate": round(1 - len(failures) / len(checked), 4),
            "reference_failures": failures[:REFERENCE_EXAMPLES]}


def _checks(result: dict, round_trip: dict | None, baseline: dict | None) -> None:
    """Add the §4 checks to a task's result, with a warning where they fail."""
    result["reference_parse_rate"] = None if round_trip is None else round_trip["reference_parse_rate"]
    if round_trip is not None and round_trip["reference_failures"]:
        result["reference_failures"] = round_trip["reference_failures"]
        first = round_trip["reference_failures"][0]
        result["warnings"].append(
            f"reference answers: only {100 * round_trip['reference_parse_rate']:.2f}% parse back to their labels, "
            f"so this task's metrics are not trustworthy (e.g. {first['output']!r} → {first['parsed']!r}, "
            f"label {first['label']!r})")
    result["baseline"] = baseline
    if baseline is not None and result["mixed_score"] <= baseline["mixed_score"] and (
        result["paper_metric"]["value"] <= baseline["paper_metric"]
    ):
        prediction = baseline["prediction"]  # a mean label is a float of many digits: four significant ones
        shown = f"{prediction:.4g}" if isinstance(prediction, float) else repr(prediction)
        result["warnings"].append(f"no better than the baseline (constant prediction {shown})")


def score_rows(rows: list[dict], specs: dict[str, TaskSpec], reasoning: bool) -> tuple[dict, dict]:
    """Per-task metrics of parsed rows, and the overall summary with the paper table (`paper_table`).

    A row's `probability` (model p of the true class) is used when present; its `output` (the reference
    answer) feeds the round trip of §4."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    results, groups = {}, []
    for task, task_rows in sorted(by_task.items()):
        spec = specs[task]
        labels = [normalize_label(r["label"], spec) for r in task_rows]
        predictions = [r["prediction"] for r in task_rows]
        read = [r.get("probability") for r in task_rows]
        probabilities = None
        if any(p is not None for p in read):  # per sample: the model's p where readable, else hard 1/0
            probabilities = [p if p is not None else float(pred == label)
                             for p, pred, label in zip(read, predictions, labels, strict=True)]
        result = score_task(spec, labels, predictions, probabilities)
        if spec.task_type.reads_probability:
            result["model_probability_share"] = round(sum(p is not None for p in read) / len(read), 4)
        if reasoning:
            result["format_compliance"] = round(100 * sum(bool(r["format_ok"]) for r in task_rows) / len(task_rows), 2)
            lengths = [r["output_words"] if "output_words" in r else len(r["generated"].split()) for r in task_rows]
            result["output_words"] = {"mean": round(statistics.fmean(lengths), 1),
                                      "median": statistics.median(lengths), "max": max(lengths)}
        _checks(result, reference_round_trip(task_rows, labels, spec, reasoning), baseline_scores(spec, labels))
        results[task] = result
        groups.append((spec, labels, predictions))
    return results, {**summarize_overall(results), "paper_table": paper_table(groups)}


def _paper_label(label: Any) -> Any:
    """The paper format writes object labels as JSON or Python text ("{'ON': 0.1, ...}")."""
    if isinstance(label, str) and label.lstrip().startswith(("{", "[")):
        for read in (json.loads, ast.literal_eval):
            try:
                return read(label)
            except (ValueError, SyntaxError):
                continue
    return label


def read_scored_rows(path: Path) -> tuple[list[dict], str, int]:
    """Rows to score from our predictions file or the paper evaluator's `.jsonl` ({task, label,
    model_output|result}, `input`/`output` optional): (rows with `generated`, format name, rows skipped
    for a null label, which the paper's evaluator drops too)."""
    rows, formats, unlabeled = [], set(), 0
    for line_no, line in text_lines(Path(path), DataReport(str(path))):  # UTF-8/16/32, BOM or not
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{line_no}: not a JSON line ({err.msg})") from err
        answer = next((k for k in ("generated", *PAPER_OUTPUT_FIELDS) if k in row), None) if isinstance(
            row, dict) else None
        if answer is None or "task" not in row or "label" not in row:
            raise UserError(f"{path}:{line_no}: expected an object with 'task', 'label' and 'generated' "
                            f"(omics predictions) or 'model_output'/'result' (the paper's format)")
        if row["label"] is None:
            unlabeled += 1
            continue
        formats.add("omics" if answer == "generated" else "paper")
        if answer != "generated":
            row = {k: v for k, v in row.items() if k not in PAPER_OUTPUT_FIELDS} | {
                "generated": row[answer], "label": _paper_label(row["label"])}
        row["task"], row["generated"] = str(row["task"]), str(row["generated"] or "")
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no labelled rows to score")
    return rows, "+".join(sorted(formats)), unlabeled


def rescore(predictions: Path, train_data: Path | None, out: Path | None, train_summary: dict | None = None) -> dict:
    """`omics score`: re-parse and re-score any system's outputs; no model, no GPU, no torch. `train_summary` (a
    model folder's, `score --model`; {} for none) replaces the training summary found beside the predictions."""
    rows, file_format, unlabeled = read_scored_rows(predictions)
    ours = [r for r in rows if "format_ok" in r]  # our rows say their mode (Stage 3 direct: None); others: the tags
    reasoning = any(r["format_ok"] is not None for r in ours) if ours else any("</answer>" in r["generated"]
                                                                               for r in rows)
    specs = _specs(rows, training_summary(train_data, predictions.parent) if train_summary is None else train_summary)
    parse_rows(rows, specs, reasoning)
    results, overall = score_rows(rows, specs, reasoning)
    print(format_table(results, overall))
    if out is None:
        return {"overall": overall, "tasks": results}
    meta = {"rescored_from": str(Path(predictions).resolve()), "format": file_format, "n_examples": len(rows),
            "unlabeled_rows_skipped": unlabeled, "train_data": None if train_data is None else str(train_data),
            "task_specs": {task: spec.to_dict() for task, spec in specs.items()}}
    write_predictions(out / "predictions.jsonl", rows)
    return write_metrics(out, results, overall, meta, tag="rescore")
