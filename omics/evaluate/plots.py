"""Pictures of a run, drawn from the files training and evaluation already wrote.

Headless (matplotlib's Agg canvas, no pyplot state) and without torch, so `omics score` draws them too.
Memory stays bounded whatever the size of the evaluation: confusion matrices and class distributions come
from metrics.json, and predictions.jsonl is streamed, keeping a fixed-size random sample of points per
regression output for the scatter plots.
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omics.evaluate.parse import normalize_label
from omics.evaluate.tasks import FAMILIES, PAPER_COLUMNS, PAPER_RESULTS, TaskSpec
from omics.io import write_bytes

PLOTS_DIR = "plots"
DPI = 100
COLUMNS = 4  # panels per row of a one-panel-per-task figure
SCATTER_POINTS = 2000  # per regression output: enough to see a collapse, bounded for a 244k-row file
TOP_CLASSES = 20  # classes shown in a distribution (FunctionEC has thousands of EC numbers)
SEED = 0  # the scatter sample: the same file draws the same picture
LEGEND_LINES = 8  # more curves in one panel (one per task) go without a legend


@dataclass(frozen=True)
class Plot:
    """One rendered figure: `name` is its file stem under plots/ and its TensorBoard tag `plots/<name>`."""

    name: str
    title: str
    png: bytes
    width: int
    height: int
    panels: int


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # a bare Figure renders with Agg: no display, no global backend

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _render(name: str, title: str, fig) -> Plot:
    fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    width, height = (round(x * DPI) for x in fig.get_size_inches())
    return Plot(name, title, buffer.getvalue(), width, height, len(fig.axes))


def _grid(n: int, panel: tuple[float, float] = (3.8, 3.2)):
    """A figure of n panels, COLUMNS a row; the unused cells of the last row removed (axes = panels)."""
    cols, rows = min(n, COLUMNS), math.ceil(n / COLUMNS)
    fig = _figure(panel[0] * cols, panel[1] * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, list(axes[:n])


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _generation_scores(tensorboard: Path) -> dict[str, dict[int, float]]:
    """The in-training generation check's scalars (tag → step → value), from its own event files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    series: dict[str, dict[int, float]] = {}
    for path in sorted(tensorboard.glob("events.out.tfevents.*.generation")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag.endswith("mixed_score") or value.tag.endswith("mixed_score_mean"):
                    series.setdefault(value.tag.removeprefix("eval_generation/"), {})[event.step] = value.simple_value
    return series


def training_curves(metrics_dir: Path) -> Plot | None:
    """Loss (train and eval), learning rate, gradient norm and the generation check's Mixed Scores per
    step, from run_summary.json's log history and the tfevents; one panel for each that was logged."""
    summary = _read_json(metrics_dir / "run_summary.json")
    history = summary.get("log_history", []) if summary else []

    def curve(key: str) -> tuple[list, list]:
        points = [(h["step"], h[key]) for h in history if isinstance(h.get(key), int | float)]
        return [s for s, _ in points], [v for _, v in points]

    panels = [(title, {label: curve(key) for label, key in keys.items()}) for title, keys in (
        ("loss", {"train": "loss", "eval": "eval_loss"}), ("learning rate", {"": "learning_rate"}),
        ("gradient norm", {"": "grad_norm"}))]
    scores = _generation_scores(metrics_dir / "tensorboard")
    panels.append(("generation check: Mixed Score", {
        "mean" if tag == "mixed_score_mean" else tag.removesuffix("/mixed_score"): (list(steps), list(steps.values()))
        for tag, steps in sorted(scores.items(), key=lambda kv: kv[0] != "mixed_score_mean")}))
    panels = [(title, lines) for title, lines in panels if any(steps for steps, _ in lines.values())]
    if not panels:
        return None
    fig, axes = _grid(len(panels))
    for ax, (title, lines) in zip(axes, panels, strict=True):
        for label, (steps, values) in lines.items():
            if steps:
                ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=label or None)
        ax.set(title=title, xlabel="step")
        if 1 < len(lines) <= LEGEND_LINES:
            ax.legend(fontsize="small")
    return _render("training", "Training", fig)


def _hbars(ax, names: list[str], series: dict[str, list[Any]], markers: dict[str, list[Any]]) -> None:
    """Horizontal bars per name, one colour per series (stage), and point markers (baselines, the paper)."""
    import numpy as np

    y = np.arange(len(names))
    height = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        ax.barh(y - 0.4 + height * (i + 0.5), [math.nan if v is None else v for v in values], height, label=label)
    for (label, values), marker in zip(markers.items(), "D^os", strict=False):
        shown = [(v, k) for k, v in enumerate(values) if v is not None]
        if shown:
            ax.scatter(*zip(*shown, strict=True), marker=marker, color="black", zorder=3, s=18, label=label)
    ax.set_yticks(y, names, fontsize="small")
    ax.invert_yaxis()
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.legend(fontsize="small")


def _bars(name: str, title: str, xlabel: str, names: list[str], series: dict[str, list[Any]],
          markers: dict[str, list[Any]]) -> Plot:
    fig = _figure(8, 1.2 + 0.28 * len(names) * max(1, len(series) / 2))
    ax = fig.subplots()
    _hbars(ax, names, series, markers)
    ax.set_xlabel(xlabel)
    return _render(name, title, fig)


def score_bars(docs: dict[str, dict[str, Any]]) -> list[Plot]:
    """Per task: Mixed Score and paper metric of each stage (label → metrics.json document) with the
    constant baseline's as markers; per paper column: each stage beside the paper's S12 and S123."""
    tasks = list(dict.fromkeys(task for doc in docs.values() for task in doc["tasks"]))
    last = list(docs.values())[-1]["tasks"]

    def per_task(read) -> dict[str, list[Any]]:
        return {label: [read(doc["tasks"][t]) if t in doc["tasks"] else None for t in tasks]
                for label, doc in docs.items()}

    def baseline(key: str) -> list[Any]:
        return [(last.get(t, {}).get("baseline") or {}).get(key) for t in tasks]

    plots = [
        _bars("mixed-score", "Mixed Score per task", "Mixed Score (×100)", tasks,
              per_task(lambda r: r.get("mixed_score")), {"constant baseline": baseline("mixed_score")}),
        _bars("paper-metric", "Paper metric per task", "paper metric (×100; MCC, Spearman, accuracy… per task)",
              [f"{t} ({(last.get(t, {}).get('paper_metric') or {}).get('name', '?')})" for t in tasks],
              per_task(lambda r: (r.get("paper_metric") or {}).get("value")),
              {"constant baseline": baseline("paper_metric")}),
    ]
    tables = {label: doc.get("paper_table") or {} for label, doc in docs.items()}
    columns = [c for c in PAPER_COLUMNS if any(c in t for t in tables.values())]
    if columns:
        plots.append(_bars("paper-table", "Paper table: families pooled, beside the paper's numbers", "×100",
                           [f"{c} ({FAMILIES[PAPER_COLUMNS[c][0]][1]})" for c in columns],
                           {label: [t.get(c) for c in columns] for label, t in tables.items()},
                           {"paper S12": [PAPER_RESULTS[c][0] for c in columns],
                            "paper S123": [PAPER_RESULTS[c][1] for c in columns]}))
    return plots


def confusion_matrices(results: dict[str, dict[str, Any]]) -> Plot | None:
    """One panel per classification task: counts, coloured by the share of each true label's row."""
    import numpy as np

    tasks = {t: r["confusion_matrix"] for t, r in results.items() if r.get("confusion_matrix")}
    if not tasks:
        return None
    fig, axes = _grid(len(tasks))
    for ax, (task, cm) in zip(axes, tasks.items(), strict=True):
        counts = np.array(cm["matrix"], dtype=float)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        ticks = range(len(cm["labels"]))
        ax.set_xticks(ticks, cm["labels"], rotation=45, ha="right", fontsize="small")
        ax.set_yticks(ticks, cm["labels"], fontsize="small")
        if len(ticks) <= 12:
            for (i, j), n in np.ndenumerate(counts.astype(int)):
                ax.text(j, i, n, ha="center", va="center", fontsize="small",
                        color="white" if shares[i, j] > 0.6 else "black")
        ax.set(title=task, xlabel="predicted", ylabel="true")
    return _render("confusion", "Confusion matrices (rows: true label; colour: share of the row)", fig)


def class_distributions(results: dict[str, dict[str, Any]]) -> Plot | None:
    """Per classification task, how often each class is predicted vs. labelled: a collapse to one answer
    shows as one tall bar. At most TOP_CLASSES classes (the most frequent), plus invalid answers."""
    tasks = {t: r for t, r in results.items() if r.get("prediction_distribution") is not None}
    if not tasks:
        return None
    fig, axes = _grid(len(tasks))
    for ax, (task, r) in zip(axes, tasks.items(), strict=True):
        predicted, labelled = r["prediction_distribution"], r["label_distribution"]
        classes = sorted({*labelled, *predicted} - {"invalid"},
                         key=lambda c: -(labelled.get(c, 0) + predicted.get(c, 0)))
        names = [*classes[:TOP_CLASSES], *(["invalid"] if predicted.get("invalid") else [])]
        _hbars(ax, names, {"labels": [labelled.get(c, 0) for c in names],
                           "predictions": [predicted.get(c, 0) for c in names]}, {})
        ax.set(title=f"{task}{'  ⚠ collapse' if r.get('collapse') else ''}", xlabel="examples")
    return _render("class-distribution", "Predicted classes vs. labels", fig)


@dataclass
class _Sample:
    """A fixed-size uniform sample of a stream (reservoir sampling) and the counts it was drawn from."""

    points: list[tuple[float, float]]
    seen: int = 0
    total: int = 0
    label_range: tuple[float, float] = (math.inf, -math.inf)  # of every label, valid answer or not

    def add(self, point: tuple[float, float], rng: random.Random) -> None:
        self.seen += 1
        if len(self.points) < SCATTER_POINTS:
            self.points.append(point)
        elif (k := rng.randrange(self.seen)) < SCATTER_POINTS:
            self.points[k] = point


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) else None


def _regression_points(predictions: Path, specs: dict[str, TaskSpec]) -> dict[tuple[str, str | None], _Sample]:
    """(task, output key) → a bounded sample of (label, prediction) over valid answers, streaming the file."""
    rng, samples = random.Random(SEED), {}
    with predictions.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            spec = specs.get(row["task"])
            if spec is None or spec.type not in ("regression", "multi_regression"):
                continue
            label, prediction = normalize_label(row["label"], spec), row.get("prediction")
            for key in spec.keys or [None]:
                y, p = (label, prediction) if key is None else (label[key], (prediction or {}).get(key))
                sample = samples.setdefault((row["task"], key), _Sample([]))
                sample.total += 1
                if (y := _number(y)) is not None:
                    sample.label_range = (min(sample.label_range[0], y), max(sample.label_range[1], y))
                    if (p := _number(p)) is not None:
                        sample.add((y, p), rng)
    return samples


def regression_scatter(predictions: Path, results: dict[str, dict[str, Any]],
                       specs: dict[str, TaskSpec]) -> Plot | None:
    """Per regression output: predicted vs. true (a random sample of at most SCATTER_POINTS valid answers),
    the identity line and the constant baseline (the training labels' mean)."""
    if not predictions.is_file():
        return None
    samples = _regression_points(predictions, specs)
    if not samples:
        return None
    fig, axes = _grid(len(samples))
    for ax, ((task, key), sample) in zip(axes, samples.items(), strict=True):
        baseline = (results.get(task, {}).get("baseline") or {}).get("prediction")
        baseline = baseline.get(key) if isinstance(baseline, dict) else baseline
        values = [v for point in sample.points for v in point] + [*sample.label_range, baseline]
        values = [v for v in values if v is not None and math.isfinite(v)]
        if sample.points:
            ax.scatter(*zip(*sample.points, strict=True), s=6, alpha=0.5, label="answers")
        if values:
            ax.plot([min(values), max(values)], [min(values), max(values)], color="grey", linestyle="--",
                    linewidth=1, label="identity")
        if baseline is not None:
            ax.axhline(baseline, color="red", linewidth=1, label=f"constant baseline {baseline:.3g}")
        shown = f"{len(sample.points)} of " if sample.seen > len(sample.points) else ""
        ax.set(title=f"{task}{f' ({key})' if key else ''}", xlabel="true", ylabel="predicted")
        ax.text(0.02, 0.98, f"valid {sample.seen}/{sample.total}, shown {shown}{sample.seen}",
                transform=ax.transAxes, va="top", fontsize="small")
        ax.legend(fontsize="small", loc="lower right")
    return _render("regression", "Predicted vs. true (regression)", fig)


def bits_per_residue(likelihood: dict[str, Any]) -> Plot:
    """Stage 1: bits per residue by molecule type, each model (base, trained) side by side."""
    results = likelihood["results"]
    molecules = list(next(iter(results.values())))
    models = sorted(results, key=lambda m: m != "base")  # base first: the "before"
    return _bars("bits-per-residue", "Stage 1: held-out bits per residue (lower is better)", "bits per residue",
                 molecules, {m: [results[m][mol]["bits_per_residue"] for mol in molecules] for m in models}, {})


def folder_plots(metrics_dir: Path) -> list[Plot]:
    """Every plot the files in `metrics_dir` allow: training curves, Stage 1's likelihood, and the
    evaluation's scores, confusion matrices, class distributions and regression scatter."""
    plots = [training_curves(metrics_dir)]
    if (likelihood := _read_json(metrics_dir / "likelihood.json")) is not None:
        plots.append(bits_per_residue(likelihood))
    if (doc := _read_json(metrics_dir / "metrics.json")) is not None:
        specs = {t: TaskSpec.from_dict(s) for t, s in doc["meta"].get("task_specs", {}).items()}
        plots += [*score_bars({doc["meta"].get("tag", metrics_dir.name): doc}), confusion_matrices(doc["tasks"]),
                  class_distributions(doc["tasks"]),
                  regression_scatter(metrics_dir / "predictions.jsonl", doc["tasks"], specs)]
    return [p for p in plots if p is not None]


def _image_events(plots: list[Plot]) -> Iterator:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    for plot in plots:
        image = Summary.Image(height=plot.height, width=plot.width, colorspace=4, encoded_image_string=plot.png)
        yield Event(wall_time=time.time(), step=0, summary=Summary(value=[Summary.Value(tag=f"plots/{plot.name}",
                                                                                          image=image)]))


def write_plots(folder: Path, plots: list[Plot], tag: str) -> Path:
    """PNGs under folder/plots/ (atomic writes) and the same images in folder/tensorboard (`plots/<name>`)."""
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    for plot in plots:
        write_bytes(folder / PLOTS_DIR / f"{plot.name}.png", plot.png)
    writer = EventFileWriter(str(folder / "tensorboard"), filename_suffix=f".{tag}-plots")
    try:
        for event in _image_events(plots):
            writer.add_event(event)
    finally:
        writer.close()
    return folder / PLOTS_DIR
