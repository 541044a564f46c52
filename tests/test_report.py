"""Evaluation outputs: atomic files, metrics.json, tfevents tags, the Markdown table, stage comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from omics.errors import UserError
from omics.evaluate.report import (
    PREDICTION_FIELDS,
    compare,
    compare_files,
    format_table,
    read_predictions,
    write_metrics,
    write_predictions,
)
from omics.io import ensure_writable

RESULTS = {
    "emp-gcrich": {
        "task": "emp-gcrich",
        "family": "emp",
        "type": "binary",
        "omics_group": "DNA",
        "n": 30,
        "n_valid": 29,
        "valid_rate": 29 / 30,
        "paper_metric": {"name": "MCC", "value": 61.25},
        "mixed_score": 78.4,
        "warnings": ["1 invalid prediction counted as wrong"],
        "accuracy": 0.8,
        "f1": 0.8125,
        "mcc": 0.6125,
        "confusion_matrix": {"labels": ["negative", "positive"], "matrix": [[11, 4], [2, 13]]},
        "prediction_distribution": {"negative": 13, "positive": 17},
        "reference_parse_rate": 1.0,
        "baseline": {"prediction": True, "paper_metric": 0.0, "mixed_score": 33.33},
        "collapse": False,
    },
    "gc_content": {
        "task": "gc_content",
        "family": "gc_content",
        "type": "regression",
        "omics_group": "DNA",
        "n": 30,
        "n_valid": 30,
        "valid_rate": 1.0,
        "paper_metric": {"name": "Spearman", "value": 91.5},
        "mixed_score": 88.123,
        "warnings": [],
        "mae": 4.25,
        "rmse": 5.5,
        "pearson": 0.93,
        "spearman": 0.915,
        "r2": 0.86,
        "reference_parse_rate": 0.9,
        "reference_failures": [{"output": "about half", "parsed": None, "label": 50.0}],
        "collapse": True,
    },
}
OVERALL = {"mixed_score_mean": 83.26, "by_omics": {"DNA": 83.26}, "n_tasks": 2, "n_examples": 60,
           "paper_table": {"emp": 12.1, "sirnaEfficiency": 50.0}}
META = {"stage": 2, "data": "test.jsonl", "data_sha256": "a" * 64}


def _doc(mixed: dict[str, float], paper: dict[str, float], sha: str = "a" * 64) -> dict:
    tasks = {
        task: {"mixed_score": value, "paper_metric": {"name": "MCC", "value": paper[task]}}
        for task, value in mixed.items()
    }
    mean = sum(mixed.values()) / len(mixed)
    return {"meta": {"data_sha256": sha}, "overall": {"mixed_score_mean": mean}, "tasks": tasks}


def _row(line: str, table: str) -> list[str]:
    row = next(r for r in table.splitlines() if r.startswith(f"| {line} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_predictions_round_trip_atomically(tmp_path: Path) -> None:
    plain = {"task": "gc_content", "input": "q", "label": 47.5, "prediction": 45.0, "generated": "45.00%"}
    extra = {"p_true": 0.1, "valid": False, "format_ok": False, "input": "q2", "task": "emp-gcrich"}
    path = write_predictions(tmp_path / "predictions.jsonl", [{**plain, "valid": True}, {**plain, **extra}])
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.jsonl"]
    back = read_predictions(path)
    assert back[0]["format_ok"] is None and back[1]["format_ok"] is False
    assert list(back[1]) == [*PREDICTION_FIELDS, "p_true"]
    assert back[1]["p_true"] == 0.1 and back[1]["input"] == "q2"


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    path.write_text("old\n")

    def rows():
        yield {"task": "t", "input": "i", "label": 1, "prediction": 1, "generated": "1", "valid": True}
        raise RuntimeError("generation crashed")

    with pytest.raises(RuntimeError):
        write_predictions(path, rows())
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.jsonl"]


def test_read_predictions_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"task": "t"}\n{broken\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2"):
        read_predictions(path)


def test_write_metrics_json_tfevents_and_markdown(tmp_path: Path) -> None:
    doc = write_metrics(tmp_path, RESULTS, OVERALL, META, tag="stage2", step=120)
    assert json.loads((tmp_path / "metrics.json").read_text()) == doc
    assert doc["meta"] == {**META, "tag": "stage2", "step": 120}
    assert doc["paper_table"] == {"emp": 12.1, "sirnaEfficiency": 50.0}  # its own key in metrics.json
    assert doc["tasks"] == RESULTS and "paper_table" not in doc["overall"]
    assert not list(tmp_path.glob(".*.tmp"))

    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*stage2"))
    assert len(events) == 1
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {
        "eval/emp-gcrich/paper_metric",
        "eval/emp-gcrich/mixed_score",
        "eval/emp-gcrich/valid_rate",
        "eval/emp-gcrich/mcc",
        "eval/emp-gcrich/prediction_distribution/positive",
        "eval/gc_content/mae",
        "eval/gc_content/spearman",
        "eval/overall/mixed_score_mean",
        "eval/overall/by_omics/DNA",
        "eval/overall/n_examples",
        "eval/overall/paper_table/emp",
    }
    assert expected <= tags
    assert not any(t.endswith(("/warnings", "/type", "/confusion_matrix")) for t in tags)
    (event,) = acc.Scalars("eval/emp-gcrich/paper_metric")
    assert (event.step, event.value) == (120, pytest.approx(61.25))

    md = (tmp_path / "metrics.md").read_text()
    assert md.startswith("# Evaluation: stage2") and format_table(RESULTS, OVERALL) in md


def test_other_file_names_for_stage1(tmp_path: Path) -> None:
    results = {"dna": {"n": 60, "bits_per_residue": 1.91}}
    write_metrics(
        tmp_path,
        results,
        {"bits_per_residue": 1.9},
        {},
        tag="stage1",
        json_name="eval.json",
        md_name="eval.md",
    )
    assert {p.name for p in tmp_path.iterdir()} == {"eval.json", "eval.md", "tensorboard"}
    assert _row("dna", (tmp_path / "eval.md").read_text()) == ["dna", "—", "60", *["—"] * 7, "", ""]


def test_format_table_shows_the_numbers() -> None:
    table = format_table(RESULTS, OVERALL)
    # task | type | n | valid % | format % | ref. parse % | paper metric | baseline | Mixed | baseline Mixed | collapse
    assert _row("emp-gcrich", table) == [
        "emp-gcrich", "binary", "30", "96.67", "—", "100.00", "MCC = 61.25", "0.00", "78.40", "33.33", "", "⚠ 1",
    ]  # fmt: skip
    assert _row("gc_content", table) == [
        "gc_content", "regression", "30", "100.00", "—", "⛔ 90.00", "Spearman = 91.50", "—", "88.12", "—", "⚠ yes", "",
    ]  # fmt: skip
    # a task whose reference answers do not parse back heads the table in red-letter terms
    assert table.startswith("> ⛔ **gc_content: only 90.00% of its reference answers parse back to their labels.**")
    assert "NOT trustworthy" in table and "'about half' → None, label 50.0" in table
    assert "- ⚠ emp-gcrich: 1 invalid prediction counted as wrong" in table
    assert "- mixed_score_mean: 83.26" in table
    assert "- by_omics: DNA 83.26" in table
    assert "- n_tasks: 2" in table
    assert "paper_table" not in table.split("Overall:")[1]


def test_paper_table_beside_the_papers_values() -> None:
    table = format_table(RESULTS, OVERALL)
    assert "## Paper table (2 of 22 columns;" in table
    # column | metric | this run | S12 | Δ S12 | S123 | Δ S123; emp: 12.10 − 8.10 = +4.00, 12.10 − 3.64 = +8.46
    assert _row("emp", table) == ["emp", "MCC", "12.10", "8.10", "+4.00", "3.64", "+8.46"]
    assert _row("sirnaEfficiency", table) == ["sirnaEfficiency", "mixed_score", "50.00", "56.31", "-6.31", "56.25",
                                              "-6.25"]
    # means over the 2 columns: (12.1 + 50)/2 = 31.05; S12 (8.10 + 56.31)/2 = 32.205; S123 (3.64 + 56.25)/2 = 29.945
    mean = _row("**mean over 2 columns**", table)
    assert mean[2:4] == ["31.05", "32.20"] and mean[5] == "29.95"
    assert "Columns absent from this data: pd, cpd," in table

def test_compare_deltas_and_missing_tasks() -> None:
    docs = {
        "stage2": _doc({"emp-H3": 50.0, "tf-H": 40.25}, {"emp-H3": 10.0, "tf-H": 5.0}),
        "stage3": _doc({"emp-H3": 53.5, "pd-300": 70.0}, {"emp-H3": 8.0, "pd-300": 30.0}),
    }
    out = compare(docs)
    mixed, paper = out.split("## Paper metric")
    assert "| task | stage2 | stage3 | Δ stage3-stage2 |" in mixed
    assert _row("emp-H3", mixed) == ["emp-H3", "50.00", "53.50", "+3.50"]
    assert _row("tf-H", mixed) == ["tf-H", "40.25", "—", "—"]
    assert _row("pd-300", mixed) == ["pd-300", "—", "70.00", "—"]
    assert _row("mean (all tasks)", mixed) == ["mean (all tasks)", "45.12", "61.75", "+16.62"]
    assert _row("emp-H3", paper) == ["emp-H3", "MCC", "10.00", "8.00", "-2.00"]
    assert "Warning" not in out


def test_compare_shows_the_paper_table_per_stage() -> None:
    docs = {
        "stage2": {**_doc({"emp-H3": 50.0}, {"emp-H3": 10.0}), "paper_table": {"emp": 10.0, "Solubility": 60.0}},
        "stage3": {**_doc({"emp-H3": 53.5}, {"emp-H3": 8.0}), "paper_table": {"emp": 8.0}},
    }
    paper = compare(docs).split("## Paper table")[1]
    assert "| column | metric | stage2 | stage3 | Δ stage3-stage2 | paper S12 | paper S123 |" in paper
    assert _row("emp", paper) == ["emp", "MCC", "10.00", "8.00", "-2.00", "8.10", "3.64"]
    assert _row("Solubility", paper) == ["Solubility", "accuracy", "60.00", "—", "—", "62.07", "63.02"]
    # means: stage2 (10 + 60)/2 = 35, stage3 8; paper over the two columns (8.10 + 62.07)/2 = 35.085
    assert _row("mean (columns present)", paper)[2:6] == ["35.00", "8.00", "-27.00", "35.09"]


def test_compare_three_stages_adds_last_minus_first() -> None:
    scores = {"s1": 40.0, "s2": 45.0, "s3": 42.0}
    docs = {label: _doc({"emp-H3": v}, {"emp-H3": v / 2}) for label, v in scores.items()}
    mixed = compare(docs).split("## Paper metric")[0]
    assert "| task | s1 | s2 | s3 | Δ s2-s1 | Δ s3-s2 | Δ s3-s1 |" in mixed
    assert _row("emp-H3", mixed) == ["emp-H3", "40.00", "45.00", "42.00", "+5.00", "-3.00", "+2.00"]


def test_compare_warns_about_different_data(tmp_path: Path) -> None:
    paths = {}
    for label, sha in [("stage2", "a" * 64), ("stage3", "b" * 64)]:
        paths[label] = tmp_path / f"{label}.json"
        paths[label].write_text(json.dumps(_doc({"emp-H3": 50.0}, {"emp-H3": 1.0}, sha)))
    out, docs = compare_files(paths)
    assert list(docs) == ["stage2", "stage3"]
    assert out.startswith("> ⚠ Warning: these evaluations used different data files")
    assert "aaaaaaaaaaaa" in out and "bbbbbbbbbbbb" in out
    with pytest.raises(UserError, match="missing.json"):
        compare_files({"stage2": tmp_path / "missing.json"})


def test_ensure_writable(tmp_path: Path) -> None:
    ensure_writable(tmp_path / "absent", overwrite=False)
    (tmp_path / "empty_dir").mkdir()
    ensure_writable(tmp_path / "empty_dir", overwrite=False)
    (tmp_path / "empty.json").touch()
    ensure_writable(tmp_path / "empty.json", overwrite=False)
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(UserError, match="--overwrite"):
        ensure_writable(tmp_path / "metrics.json", overwrite=False)
    with pytest.raises(UserError, match="--overwrite"):
        ensure_writable(tmp_path, overwrite=False)
    ensure_writable(tmp_path / "metrics.json", overwrite=True)
