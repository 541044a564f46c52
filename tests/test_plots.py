"""Plots and report.html: written by `omics score --out` from real files, parsed back, every table and image
checked; the scatter sample stays bounded; a failing plot never loses the metrics."""

from __future__ import annotations

import base64
import json
import logging
import struct
from html.parser import HTMLParser
from pathlib import Path

from helpers import cli, head

from omics.evaluate import plots
from omics.evaluate.plots import folder_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# two classification tasks (binary, multi-class), one regression, one two-output regression
ROWS = [
    *({"task": "emp-x", "label": label, "model_output": answer}
      for label, answer in [("positive", "yes"), ("negative", "no"), ("positive", "no"), ("negative", "no")]),
    *({"task": "NoncodingRNAFamily-x", "label": label, "model_output": f"It is {answer}."}
      for label, answer in [("tRNA", "tRNA"), ("rRNA", "tRNA"), ("miRNA", "miRNA"), ("rRNA", "rRNA")]),
    *({"task": "Stability-x", "label": y, "model_output": str(p)} for y, p in [(1.0, 1.5), (2.0, 2.0), (3.0, 2.5)]),
    *({"task": "enhancer_activity-x", "label": {"hk": y, "dev": -y}, "model_output": f"hk {p}, dev {-p}"}
      for y, p in [(1.0, 1.2), (2.0, 1.1), (3.0, 3.3)]),
]


class _Page(HTMLParser):
    """The tables and images of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables, self.images = 0, []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tables += tag == "table"
        if tag == "img":
            self.images.append(dict(attrs))


def _png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_SIGNATURE) and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def _scored(tmp_path: Path, monkeypatch, rows: list[dict] = ROWS, *extra: str, out: str = "scored") -> Path:
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli(monkeypatch, tmp_path, "score", "--predictions", "answers.jsonl", "--out", out, *extra) == 0
    return tmp_path / out


def _read_page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_score_out_writes_plots_and_a_self_contained_report(tmp_path, monkeypatch):
    out = _scored(tmp_path, monkeypatch)
    pngs = {p.stem: p.read_bytes() for p in (out / "plots").glob("*.png")}
    assert set(pngs) == {"mixed-score", "paper-metric", "paper-table", "confusion", "class-distribution", "regression"}
    assert all(len(png) > 1000 for png in pngs.values())
    # one panel per classification task, per regression output; one for each bar chart
    assert {p.name: p.panels for p in folder_plots(out)} == {
        "mixed-score": 1, "paper-metric": 1, "paper-table": 1, "confusion": 2, "class-distribution": 2,
        "regression": 3}

    page = _read_page(out / "report.html")
    text = (out / "report.html").read_text(encoding="utf-8")
    markdown_tables = (out / "metrics.md").read_text().count("\n|---")  # the task table and the paper table
    assert markdown_tables == 2 and page.tables == markdown_tables + 1  # + the evaluation settings
    embedded = []
    for image in page.images:
        assert image["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(image["src"].removeprefix("data:image/png;base64,"), validate=True)
        assert _png_size(png) == (int(image["width"]), int(image["height"]))
        embedded.append(png)
    assert sorted(embedded) == sorted(pngs.values())  # every plot, as written under plots/
    assert "http://" not in text and "https://" not in text and "<script" not in text  # no external asset

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    (events,) = (out / "tensorboard").glob("*.rescore-plots")
    tags = {v.tag for e in EventFileLoader(str(events)).Load() for v in e.summary.value
            if v.metadata.plugin_data.plugin_name == "images"}  # as TensorBoard reads them
    assert tags == {f"plots/{name}" for name in pngs}
    manifest = json.loads((out / ".omics-manifest.json").read_text())
    assert {"report.html", "plots"} <= set(manifest["entries"])


def test_overwrite_replaces_the_report_with_the_new_results(tmp_path, monkeypatch):
    out = _scored(tmp_path, monkeypatch)
    _scored(tmp_path, monkeypatch, ROWS[:4], "--overwrite")  # binary task only
    assert {p.stem for p in (out / "plots").glob("*.png")} == {
        "mixed-score", "paper-metric", "paper-table", "confusion", "class-distribution"}
    assert "NoncodingRNAFamily-x" not in (out / "report.html").read_text()
    assert not list(tmp_path.glob(".omics-*"))  # the previous run's files, set aside, are gone


def test_scatter_keeps_a_bounded_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "SCATTER_POINTS", 10)
    rows = [{"task": "Stability-x", "label": float(i), "model_output": str(i + 0.5)} for i in range(200)]
    rows.append({"task": "Stability-x", "label": 500.0, "model_output": "no idea"})  # invalid answer
    out = _scored(tmp_path, monkeypatch, rows)
    specs = {t: plots.TaskSpec.from_dict(s) for t, s in json.loads((out / "metrics.json").read_text())[
        "meta"]["task_specs"].items()}
    sample = plots._regression_points(out / "predictions.jsonl", specs)[("Stability-x", None)]
    assert (len(sample.points), sample.seen, sample.total) == (10, 200, 201)
    assert sample.label_range == (0.0, 500.0) and all(p == y + 0.5 for y, p in sample.points)


def test_a_failing_plot_never_loses_the_metrics(tmp_path, monkeypatch, caplog):
    (tmp_path / "scored").mkdir()
    (tmp_path / "scored/run_summary.json").write_text("{not json")  # a broken training record beside the results
    caplog.set_level(logging.WARNING, logger="omics")
    out = _scored(tmp_path, monkeypatch)
    assert json.loads((out / "metrics.json").read_text())["tasks"]
    assert not (out / "report.html").exists()
    assert "the results are written, but their plots/report failed: JSONDecodeError" in caplog.text


def test_stage1_report_shows_the_likelihood_beside_an_evaluation_of_the_same_model(tiny_model, tmp_path, monkeypatch):
    """The demo evaluates the Stage 1 model twice into metrics/stage1 (likelihood, then the test questions):
    its one report shows both, and the second evaluation is not refused for the first one's report."""
    (tmp_path / "held.txt").write_text("\n".join(head("stage1_heldout.txt", 6)) + "\n")
    assert cli(monkeypatch, tmp_path, "stage1", "evaluate", "--data", "held.txt", "--model", str(tiny_model),
               "--base-model", str(tiny_model), "--metrics-dir", "m") == 0
    assert [(p.name, p.panels) for p in folder_plots(tmp_path / "m")] == [("bits-per-residue", 1)]
    assert "Stage 1 held-out likelihood" in (tmp_path / "m/report.html").read_text()
    out = _scored(tmp_path, monkeypatch, ROWS[:4], out="m")
    assert {"bits-per-residue", "mixed-score", "confusion"} <= {p.stem for p in (out / "plots").glob("*.png")}
    tables = sum((out / name).read_text().count("\n|---") for name in ("metrics.md", "likelihood.md"))
    assert _read_page(out / "report.html").tables == tables + 2  # + the settings of each evaluation


def test_compare_writes_a_comparison_report_linking_each_stage(tmp_path, monkeypatch, caplog):
    root = tmp_path / "metrics"
    _scored(tmp_path, monkeypatch, ROWS[:8], out="metrics/stage2")
    _scored(tmp_path, monkeypatch, ROWS, out="metrics/stage3")
    _scored(tmp_path, monkeypatch, ROWS[4:], out="metrics/stage3/direct")  # Stage 3 asked directly: its column
    assert cli(monkeypatch, tmp_path, "compare", "--stages", "2", "3", "--metrics-root", "metrics") == 0
    page = _read_page(root / "comparison.html")
    assert page.tables == (root / "comparison.md").read_text().count("\n|---") == 3
    assert {p.stem for p in (root / "plots").glob("*.png")} == {"mixed-score", "paper-metric", "paper-table"}
    assert len(page.images) == 3
    text = (root / "comparison.html").read_text()
    assert all(f'href="{folder}/report.html"' in text for folder in ("stage2", "stage3", "stage3/direct"))
    assert "<title>omics report: stage3/direct</title>" in (root / "stage3/direct/report.html").read_text()
    mine = ["compare", "--stages", "2", "3", "--metrics-root", "metrics", "--out", "mine"]  # the demo's left alone
    assert cli(monkeypatch, tmp_path, *mine) == 0
    assert "these results answer different questions (stage2: 8 of" in caplog.text  # 8, 14 and 10 rows
    assert 'href="../metrics/stage3/direct/report.html"' in (tmp_path / "mine/comparison.html").read_text()
