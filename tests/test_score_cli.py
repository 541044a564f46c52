"""`omics score` on anyone's outputs: the paper evaluator's format, --out, --train-data, the §4 checks, no torch."""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from helpers import cli

ROOT = Path(__file__).resolve().parent.parent


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_paper_format_with_out_and_without_input(tmp_path, monkeypatch):
    rows = [
        {"task": "Stability-s", "label": 1.0, "model_output": "2.0"},
        {"task": "Stability-s", "label": 3.0, "result": "2.0"},  # `result` is accepted for `model_output`
        {"task": "Stability-s", "label": None, "model_output": "5"},  # null label: dropped, as the paper does
    ]
    write_jsonl(tmp_path / "answers.jsonl", rows)
    assert cli(monkeypatch, tmp_path, "score", "--predictions", "answers.jsonl", "--out", "scored") == 0
    doc = json.loads((tmp_path / "scored/metrics.json").read_text())
    assert doc["meta"]["format"] == "paper" and doc["meta"]["unlabeled_rows_skipped"] == 1
    result = doc["tasks"]["Stability-s"]
    assert (result["n"], result["valid_rate"], result["reference_parse_rate"]) == (2, 1.0, None)
    # constant answers: the baseline (mean of the labels, 2.0) predicts the same; flagged as no better
    assert result["baseline"] == {"prediction": 2.0, "paper_metric": 0.0, "mixed_score": result["mixed_score"]}
    assert "no better than the baseline (constant prediction 2)" in result["warnings"]  # 4 significant digits
    written = [json.loads(line) for line in (tmp_path / "scored/predictions.jsonl").read_text().splitlines()]
    assert [(r["input"], r["generated"], r["prediction"]) for r in written] == [(None, "2.0", 2.0), (None, "2.0", 2.0)]


def test_bad_rows_are_named_by_line(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="omics")
    write_jsonl(tmp_path / "answers.jsonl", [{"task": "t", "label": 1, "model_output": "1"}, {"task": "t", "label": 1}])
    assert cli(monkeypatch, tmp_path, "score", "--predictions", "answers.jsonl") == 2
    assert "answers.jsonl:2" in caplog.text and "model_output" in caplog.text


def test_reference_answers_that_do_not_parse_back_are_flagged(tmp_path, monkeypatch, capsys):
    rows = [
        {"task": "emp-x", "label": "positive", "model_output": "yes", "output": "Yes, marks are present."},
        # no decisive wording, and its one word is also in the positive answer, so it is no class word
        {"task": "emp-x", "label": "negative", "model_output": "no", "output": "Marks: 0."},
    ]
    write_jsonl(tmp_path / "answers.jsonl", rows)
    assert cli(monkeypatch, tmp_path, "score", "--predictions", "answers.jsonl", "--out", "scored") == 0
    printed = capsys.readouterr().out
    assert printed.startswith("> ⛔ **emp-x: only 50.00% of its reference answers parse back to their labels.**")
    assert "| ⛔ 50.00 |" in printed
    result = json.loads((tmp_path / "scored/metrics.json").read_text())["tasks"]["emp-x"]
    assert result["reference_parse_rate"] == 0.5
    assert result["reference_failures"] == [{"output": "Marks: 0.", "parsed": None, "label": False}]
    assert "⛔" in (tmp_path / "scored/metrics.md").read_text()


def test_train_data_supplies_ranges_and_vocabularies(tmp_path, monkeypatch):
    train = [{"task": "Stability-s", "input": "q", "output": f"{v}", "label": v} for v in (0.0, 10.0)]
    train += [{"task": "FunctionEC-e", "input": "q", "output": "EC 3.3.3.3", "label": "EC 3.3.3.3"}]
    write_jsonl(tmp_path / "train.jsonl", train)
    answers = [
        {"task": "Stability-s", "label": 15.0, "model_output": "15"},
        {"task": "Stability-s", "label": 20.0, "model_output": "20"},
        {"task": "FunctionEC-e", "label": "EC 1.1.1.1", "model_output": "EC 1.1.1.1, EC 3.3.3.3"},
    ]
    write_jsonl(tmp_path / "answers.jsonl", answers)
    docs = {}
    for name, extra in (("alone", []), ("trained", ["--train-data", "train.jsonl"])):
        assert cli(monkeypatch, tmp_path, "score", "--predictions", "answers.jsonl", "--out", name, *extra) == 0
        docs[name] = json.loads((tmp_path / name / "metrics.json").read_text())["tasks"]
    # range = training and evaluation labels together, [0, 20]: perfect answers score 100 (with the training
    # range [0, 10] alone they would fall outside 0–100 and be capped at 50)
    assert docs["trained"]["Stability-s"]["mixed_score"] == 100.0
    assert docs["trained"]["Stability-s"]["baseline"]["prediction"] == 5.0  # the training labels' mean
    # EC vocabulary: 3.3.3.3 is known only from the training labels. Alone it is ignored → Fmax 100; with the
    # training file it counts: precision 1/2, recall 1 → F = 2·0.5·1/1.5 = 66.67
    assert (docs["alone"]["FunctionEC-e"]["fmax"], docs["trained"]["FunctionEC-e"]["fmax"]) == (100.0, 66.67)


def test_score_imports_no_torch(tmp_path):
    path = write_jsonl(tmp_path / "answers.jsonl", [{"task": "emp-x", "label": "positive", "model_output": "yes"},
                                                    {"task": "emp-x", "label": "negative", "model_output": "no"}])
    code = ("import sys; from omics.cli import main; rc = main(['score', '--predictions', sys.argv[1], '--out', "
            "sys.argv[2]]); assert rc == 0, rc; print(sorted({'torch', 'transformers'} & set(sys.modules)))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "out")], capture_output=True,
                          text=True, env=env, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert list((tmp_path / "out/tensorboard").glob("events.out.tfevents.*rescore"))  # tfevents without torch


def test_score_reads_utf16_and_refuses_binary_in_one_line(tmp_path, monkeypatch, caplog):
    rows = [{"task": "emp-x", "label": "positive", "model_output": "yes"},
            {"task": "emp-x", "label": "negative", "model_output": "no"}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "utf16.jsonl").write_text(text, encoding="utf-16")  # with its byte-order mark
    (tmp_path / "bom.jsonl").write_text(text, encoding="utf-8-sig")
    (tmp_path / "packed.jsonl").write_bytes(gzip.compress(text.encode()))
    for name in ("utf16.jsonl", "bom.jsonl"):
        assert cli(monkeypatch, tmp_path, "score", "--predictions", name) == 0
    assert cli(monkeypatch, tmp_path, "score", "--predictions", "packed.jsonl") == 2
    assert "packed.jsonl:1: not UTF-8 text" in caplog.text
