"""What an evaluation leaves behind: predictions, metrics.json, tfevents, a Markdown table, comparisons.

Written generically against the per-task dicts of `metrics.score_task` (any numeric scalar is logged),
so Stage 1's perplexity results go through the same writer under other file names.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from omics.errors import UserError
from omics.evaluate.tasks import FAMILIES, PAPER_COLUMNS, PAPER_RESULTS
from omics.io import atomic_open, write_json, write_text

PREDICTION_FIELDS = ("task", "input", "label", "prediction", "generated", "valid", "format_ok")
MISSING = "—"
RED_FLAG = "⛔"


def write_predictions(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """One JSON line per example; a field the row lacks (`input` in the paper's format, `format_ok` outside
    Stage 3) is None; extra keys are kept after."""
    with atomic_open(path) as f:
        for row in rows:
            record = {key: row.get(key) for key in PREDICTION_FIELDS}
            record.update((k, v) for k, v in row.items() if k not in record)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return Path(path)


def read_predictions(path: Path) -> list[dict[str, Any]]:
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{line_no}: not a JSON line ({err.msg})") from err
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalars(values: dict[str, Any], prefix: str) -> Iterator[tuple[str, float]]:
    """Numeric leaves as (tag, value); the paper metric is logged under one stable name per task."""
    for key, value in values.items():
        tag = f"{prefix}/{key}"
        if key == "paper_metric" and isinstance(value, dict):
            yield tag, float(value["value"])
        elif _is_number(value):
            yield tag, float(value)
        elif isinstance(value, dict):
            yield from _scalars(value, tag)


def log_scalars(metrics_dir: Path, groups: dict[str, dict[str, Any]], *, tag: str, step: int = 0) -> None:
    """Every numeric leaf of `groups` as `eval/<group>/<key>` in an event file under metrics_dir/tensorboard.

    Written with tensorboard's own event writer, not torch's, so that `omics score` never imports torch."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(Path(metrics_dir) / "tensorboard"), filename_suffix=f".{tag}")
    try:
        for group, values in groups.items():
            for name, value in _scalars(values, f"eval/{group}"):
                summary = Summary(value=[Summary.Value(tag=name, simple_value=value)])
                writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))
    finally:
        writer.close()


def write_metrics(
    metrics_dir: Path,
    results: dict[str, dict[str, Any]],
    overall: dict[str, Any],
    meta: dict[str, Any],
    *,
    tag: str,
    step: int = 0,
    json_name: str = "metrics.json",
    md_name: str = "metrics.md",
    title: str | None = None,
) -> dict[str, Any]:
    """metrics.json + tfevents (`eval/<task>/<metric>`, at the training `step`) + a Markdown table.

    The event file goes into `metrics_dir/tensorboard/` next to the training logs, named with `tag`, so
    TensorBoard shows evaluation scalars beside the training curves of the same run. The paper table
    travels in `overall` (from score_rows) and is logged there; in metrics.json it is a key of its own.
    """
    metrics_dir = Path(metrics_dir)
    summary = {k: v for k, v in overall.items() if k != "paper_table"}
    doc = {"meta": {**meta, "tag": tag, "step": step}, "overall": summary, "tasks": results}
    if "paper_table" in overall:
        doc["paper_table"] = overall["paper_table"]
    write_json(metrics_dir / json_name, doc)
    log_scalars(metrics_dir, {**results, "overall": overall}, tag=tag, step=step)
    write_text(metrics_dir / md_name, f"# {title or f'Evaluation: {tag}'}\n\n{format_table(results, overall)}")
    return doc


def _num(value: Any, fmt: str = ".2f") -> str:
    return format(value, fmt) if _is_number(value) else MISSING


def _rate(value: Any) -> str:
    return _num(100 * value) if _is_number(value) else MISSING


def _paper(result: dict[str, Any]) -> str:
    metric = result.get("paper_metric")
    return f"{metric['name']} = {_num(metric['value'])}" if metric else MISSING


def _unparsed(results: dict[str, dict[str, Any]]) -> list[str]:
    """The red-letter lines for tasks whose reference answers do not parse back to their labels."""
    lines = []
    for task, r in results.items():
        rate = r.get("reference_parse_rate")
        if _is_number(rate) and rate < 1:
            example = (r.get("reference_failures") or [{}])[0]
            lines.append(
                f"> {RED_FLAG} **{task}: only {100 * rate:.2f}% of its reference answers parse back to their labels.** "
                f"The parser cannot read this task's answer style: its metrics are NOT trustworthy "
                f"(e.g. {example.get('output')!r} → {example.get('parsed')!r}, label {example.get('label')!r}).")
    return [*lines, ""] if lines else []


def _task_row(task: str, r: dict[str, Any]) -> str:
    baseline = r.get("baseline") or {}
    reference = _rate(r.get("reference_parse_rate"))
    if _is_number(r.get("reference_parse_rate")) and r["reference_parse_rate"] < 1:
        reference = f"{RED_FLAG} {reference}"
    warnings = r.get("warnings") or []
    cells = [task, r.get("type", MISSING), r.get("n", MISSING), _rate(r.get("valid_rate")),
             _num(r.get("format_compliance")), reference, _paper(r), _num(baseline.get("paper_metric")),
             _num(r.get("mixed_score")), _num(baseline.get("mixed_score")),
             "⚠ yes" if r.get("collapse") else "", f"⚠ {len(warnings)}" if warnings else ""]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def paper_rows(table: dict[str, Any]) -> list[tuple[str, str, Any, float, float]]:
    """(column, metric, this run, paper S12, paper S123) for the paper-table columns present, in order."""
    metric = {column: FAMILIES[family][1] for column, (family, _) in PAPER_COLUMNS.items()}
    return [(c, metric[c], table[c], *PAPER_RESULTS[c]) for c in PAPER_COLUMNS if c in table]


def _mean(values: list[Any]) -> float | None:
    values = [v for v in values if _is_number(v)]
    return sum(values) / len(values) if values else None


def format_paper_table(table: dict[str, Any]) -> str:
    """This run's paper table beside the paper's S12 and S123 values, the differences, and the means over
    the columns present."""
    rows = paper_rows(table)
    lines = [f"## Paper table ({len(rows)} of {len(PAPER_COLUMNS)} columns; each family's paper metric on all "
             "its examples pooled, ×100)", "",
             "| column | metric | this run | paper S12 | Δ vs S12 | paper S123 | Δ vs S123 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    means = [(f"**mean over {len(rows)} columns**", "", *(_mean([r[i] for r in rows]) for i in (2, 3, 4)))]
    for column, metric, value, s12, s123 in [*rows, *(means if rows else [])]:
        cells = [column, metric, _num(value), _num(s12), _delta(value, s12), _num(s123), _delta(value, s123)]
        lines.append("| " + " | ".join(cells) + " |")
    absent = [c for c in PAPER_COLUMNS if c not in table]
    if absent:
        lines += ["", f"Columns absent from this data: {', '.join(absent)}."]
    return "\n".join(lines) + "\n"


def format_table(results: dict[str, dict[str, Any]], overall: dict[str, Any]) -> str:
    """Red-letter lines for unreadable answer styles, the per-task table (scores ×100, rates in %), the
    warnings, the paper table, then the overall means."""
    lines = [
        *_unparsed(results),
        "| task | type | n | valid % | format % | ref. parse % | paper metric | baseline | Mixed Score "
        "| baseline Mixed | collapse | warnings |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|---|",
    ]
    notes = []
    for task, r in results.items():
        lines.append(_task_row(task, r))
        notes += [f"- ⚠ {task}: {w}" for w in r.get("warnings") or []]
    lines += ["", *notes, *([""] if notes else [])]
    if overall.get("paper_table") is not None:
        lines += [format_paper_table(overall["paper_table"])]
    lines.append("Overall:")
    for key, value in overall.items():
        if key == "paper_table":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {_num(v)}" for k, v in value.items()) or MISSING
        elif isinstance(value, float):
            value = _num(value)
        lines.append(f"- {key}: {value}")
    return "\n".join(lines) + "\n"


def _delta(new: Any, old: Any) -> str:
    return f"{new - old:+.2f}" if _is_number(new) and _is_number(old) else MISSING


def _compare_table(
    title: str, rows: dict[str, list[Any]], labels: list[str], metric: dict[str, str] | None = None,
    extra: dict[str, dict[str, Any]] | None = None, first: str = "task",
) -> list[str]:
    """Values per stage, the change between consecutive stages, and last minus first (with 3+ stages);
    `extra` adds fixed columns (name → row → value), e.g. the paper's own numbers."""
    pairs = [(i, i - 1) for i in range(1, len(labels))] + ([(len(labels) - 1, 0)] if len(labels) > 2 else [])
    extra = extra or {}
    text_cols = [first, "metric"] if metric else [first]
    numeric_cols = [*labels, *(f"Δ {labels[a]}-{labels[b]}" for a, b in pairs), *extra]
    lines = [
        f"## {title}",
        "",
        "| " + " | ".join(text_cols + numeric_cols) + " |",
        "|" + "---|" * len(text_cols) + "---:|" * len(numeric_cols),
    ]
    for name, values in rows.items():
        cells = [name, *([metric.get(name, MISSING)] if metric else []), *(_num(v) for v in values)]
        cells += [_delta(values[a], values[b]) for a, b in pairs]
        cells += [_num(column.get(name)) for column in extra.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def compare(docs: dict[str, dict[str, Any]]) -> str:
    """Stage-by-stage Mixed Score and paper metric per task, and the paper table beside the paper's own
    S12/S123 values (label → metrics.json document, in order).

    Tasks missing from a stage show as "—"; a warning heads the output when the stages were scored on
    different data files, since their deltas would then compare different examples.
    """
    labels = list(docs)
    tasks = list(dict.fromkeys(task for doc in docs.values() for task in doc["tasks"]))
    mixed, paper_values, paper_names = {}, {}, {}
    for task in tasks:
        results = [doc["tasks"].get(task, {}) for doc in docs.values()]
        metrics = [r.get("paper_metric") or {} for r in results]
        mixed[task] = [r.get("mixed_score") for r in results]
        paper_values[task] = [m.get("value") for m in metrics]
        paper_names[task] = next((m["name"] for m in metrics if "name" in m), MISSING)
    mixed["mean (all tasks)"] = [doc["overall"].get("mixed_score_mean") for doc in docs.values()]

    lines = []
    shas = {label: doc["meta"].get("data_sha256") for label, doc in docs.items()}
    if len(set(shas.values())) > 1:
        listed = ", ".join(f"{label}: {(sha or 'unknown')[:12]}" for label, sha in shas.items())
        lines += [
            f"> ⚠ Warning: these evaluations used different data files ({listed}); "
            "their deltas compare different examples.",
            "",
        ]
    lines += _compare_table("Mixed Score (×100)", mixed, labels)
    lines += _compare_table("Paper metric (×100)", paper_values, labels, paper_names)
    tables = [doc.get("paper_table") or {} for doc in docs.values()]
    present = [c for c in PAPER_COLUMNS if any(c in t for t in tables)]
    if present:
        mean = "mean (columns present)"
        paper = {c: [t.get(c) for t in tables] for c in present}
        paper[mean] = [_mean(list(t.values())) for t in tables]
        reference = {}
        for i, name in enumerate(("S12", "S123")):
            reference[f"paper {name}"] = {c: PAPER_RESULTS[c][i] for c in present}
            reference[f"paper {name}"][mean] = _mean([PAPER_RESULTS[c][i] for c in present])
        metric = {c: FAMILIES[PAPER_COLUMNS[c][0]][1] for c in present}
        lines += _compare_table("Paper table (×100, families pooled)", paper, labels, metric, reference, "column")
    return "\n".join(lines)


def compare_files(paths: dict[str, Path]) -> tuple[str, dict[str, dict[str, Any]]]:
    """Load metrics.json files (label → path) and compare them; errors name the file."""
    docs = {}
    for label, path in paths.items():
        try:
            docs[label] = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise UserError(f"{path}: no metrics.json there (run that stage's evaluate)") from err
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not a metrics.json document ({err.msg})") from err
    return compare(docs), docs
