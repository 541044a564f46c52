"""`omics generate` over .jsonl/.csv/.xlsx files and `omics chat`, on the tiny model (CPU)."""

from __future__ import annotations

import json

import pytest

from omics.cli import main
from omics.commands.generate import read_rows, write_rows

QUESTIONS = [
    {"input": "Is this DNA sequence GC-rich? <dna>GCGCGGCCGCGA<dna>", "task": "emp-gcrich"},
    {"input": "What is the GC content? <dna>ATATAT<dna>", "system": "Answer with a number."},
]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".xlsx"])
def test_generate_keeps_rows_and_adds_answers(tmp_path, tiny_model, suffix):
    source, out = tmp_path / f"questions{suffix}", tmp_path / f"answers{suffix}"
    write_rows(source, lambda: iter(QUESTIONS))
    assert main(["generate", "--model", str(tiny_model), "--data", str(source), "--out", str(out),
                 "--max-new-tokens", "4", "--backend", "hf"]) == 0
    rows = list(read_rows(out))
    assert [r["input"] for r in rows] == [q["input"] for q in QUESTIONS]
    assert all(isinstance(r["generated"], str) for r in rows)
    # refuses to overwrite its output without --overwrite
    assert main(["generate", "--model", str(tiny_model), "--data", str(source), "--out", str(out)]) == 2


def test_generate_parses_predictions_when_the_task_is_known(tmp_path, tiny_model):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"input": "q", "output": f"The sequence is {label}.", "label": label,
                                         "task": "emp-gcrich"}) + "\n" for label in ("positive", "negative")))
    source, out = tmp_path / "q.jsonl", tmp_path / "a.jsonl"
    write_rows(source, lambda: iter(QUESTIONS[:1]))
    assert main(["generate", "--model", str(tiny_model), "--data", str(source), "--out", str(out),
                 "--train-data", str(train), "--max-new-tokens", "4"]) == 0
    assert "prediction" in next(read_rows(out))  # None (invalid) for a random model, but parsed


def test_generate_rejects_rows_without_input(tmp_path, tiny_model, caplog):
    source = tmp_path / "q.jsonl"
    source.write_text(json.dumps({"question": "no input field"}) + "\n")
    assert main(["generate", "--model", str(tiny_model), "--data", str(source), "--out",
                 str(tmp_path / "a.jsonl")]) == 2
    assert "row 1 has no 'input'" in caplog.text


def test_chat_streams_and_keeps_history(tmp_path, tiny_model, monkeypatch, capsys):
    lines = iter(["hello <dna>ACGT<dna>", "/reset", "again", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert main(["chat", "--model", str(tiny_model), "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.count("omics> ") == 2
