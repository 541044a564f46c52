"""Streaming, resumable evaluation and generation on the tiny model: a SIGKILLed run resumed with --resume
ends with the files of an uninterrupted one; validation capped by task; prompts shortened by training's rule."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import cli, head

from omics.commands.generate import read_rows, write_rows
from omics.config import SYSTEM_PROMPT
from omics.data.instructions import PromptEncoder
from omics.evaluate.run import eval_subset, task_quota
from omics.model import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 4  # small sort windows, so a 10-example run spans several and a resume restarts mid-file
MAX_LENGTH = 110  # below some sample prompts: those are shortened
# Runs `omics ARGV` with SORT_WINDOW patched and ResultsLog.append replaced: after WHOLE batches on disk, the
# next one is torn (half a line written) and the process SIGKILLs itself. No hook in the code under test.
KILLER = """
import json, os, signal, sys
import omics.evaluate.stream as stream
stream.SORT_WINDOW = {window}
original, calls = stream.ResultsLog.append, []
def append(self, rows):
    calls.append(rows)
    if len(calls) > {whole}:
        with self.path.open("a") as f:
            f.write(json.dumps(rows[0])[:20])
        os.kill(os.getpid(), signal.SIGKILL)
    original(self, rows)
stream.ResultsLog.append = append
from omics.cli import main
sys.exit(main(sys.argv[1:]))
"""


def killed(cwd: Path, *argv: str, whole: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code = KILLER.format(window=WINDOW, whole=whole)
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def evaluations(tiny_model, tmp_path_factory):
    """One uninterrupted Stage 2 evaluation, and one SIGKILLed after two batches then resumed."""
    root = tmp_path_factory.mktemp("evalstream")
    (root / "test.jsonl").write_text("\n".join(head("stage2_test.jsonl", 40)) + "\n", encoding="utf-8")
    argv = ["stage2", "evaluate", "--data", "test.jsonl", "--model", str(tiny_model), "--max-new-tokens", "6",
            "--max-samples", "2", "--batch-tokens", "1", "--backend", "hf", "--max-length", str(MAX_LENGTH)]
    kill = killed(root, *argv, "--metrics-dir", "killed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("omics.evaluate.stream.SORT_WINDOW", WINDOW)
        assert cli(mp, root, *argv, "--metrics-dir", "whole") == 0
        torn = (root / "killed/predictions.jsonl").read_text(encoding="utf-8")
        refused = cli(mp, root, *argv, "--metrics-dir", "killed")
        other = cli(mp, root, *argv[:-1], str(MAX_LENGTH + 1), "--metrics-dir", "killed", "--resume")
        resumed = cli(mp, root, *argv, "--metrics-dir", "killed", "--resume")
        again = cli(mp, root, *argv, "--metrics-dir", "killed", "--resume")
    return root, kill, torn, (refused, other, resumed, again)


def test_killed_evaluation_resumes_to_the_uninterrupted_result(evaluations):
    root, kill, torn, (_, _, resumed, _) = evaluations
    assert kill.returncode == -9, kill.stderr[-2000:]
    assert not torn.endswith("\n")  # the kill tore the last line
    written = torn.count("\n")
    assert 0 < written < 10
    assert resumed == 0
    whole, again = lines(root / "whole/predictions.jsonl"), lines(root / "killed/predictions.jsonl")
    assert again == whole  # same rows, same order, no duplicates, no gaps
    assert [r["line"] for r in whole] == sorted(r["line"] for r in whole)  # input order
    first, second = (json.loads((root / d / "metrics.json").read_text()) for d in ("whole", "killed"))
    assert second["tasks"] == first["tasks"] and second["overall"] == first["overall"]
    assert second["meta"]["resumed_after"] == written and first["meta"]["resumed_after"] == 0


def test_resume_refusals(evaluations):
    """A killed run without --resume, --resume with another max_length, --resume of a finished run: refused."""
    _, _, _, (refused, other, _, again) = evaluations
    assert refused == other == again == 2


def test_refusal_messages(tiny_model, tmp_path, monkeypatch, caplog):
    """Each refusal names the file and what to do (checked before any answer is generated)."""
    caplog.set_level(logging.ERROR, logger="omics")
    (tmp_path / "test.jsonl").write_text("\n".join(head("stage2_test.jsonl", 5)) + "\n", encoding="utf-8")
    argv = ["stage2", "evaluate", "--data", "test.jsonl", "--model", str(tiny_model), "--max-new-tokens", "2",
            "--max-samples", "1", "--backend", "hf", "--metrics-dir", "m"]
    assert cli(monkeypatch, tmp_path, *argv, "--resume") == 2
    assert "no unfinished results at m/predictions.jsonl" in caplog.text
    assert not (tmp_path / "m").exists()  # a refused command leaves nothing behind
    (tmp_path / "m").mkdir()
    (tmp_path / "m/predictions.jsonl").write_text('{"task": "x"}\n')
    (tmp_path / "m/predictions.settings.json").write_text(json.dumps({"max_new_tokens": 3}))
    assert cli(monkeypatch, tmp_path, *argv) == 2
    assert "pass --resume to continue it or --overwrite" in caplog.text
    assert cli(monkeypatch, tmp_path, *argv, "--resume") == 2
    assert "written with other settings" in caplog.text and "max_new_tokens: 3 -> 2" in caplog.text
    assert "dtype: None -> 'auto'" in caplog.text and "batch_tokens: None ->" in caplog.text  # both recorded


def test_prompts_shortened_as_in_training_and_reported_per_task(evaluations, tiny_model, capsys):
    root, *_ = evaluations
    encode = PromptEncoder(load_tokenizer(tiny_model, chat=True), SYSTEM_PROMPT)
    rows = lines(root / "whole/predictions.jsonl")
    longer = Counter(r["task"] for r in rows if len(encode([r["input"]])[0]) > MAX_LENGTH)
    assert longer  # the check below is not vacuous
    meta = json.loads((root / "whole/metrics.json").read_text())["meta"]
    assert meta["max_length"] == MAX_LENGTH
    shortened = {t: n for t, n in meta["prompts_shortened"].items() if n}
    cut = {t: n for t, n in meta["prompts_question_cut"].items() if n}
    assert Counter(shortened) + Counter(cut) == longer
    assert {r["prompt_fit"] for r in rows if longer[r["task"]] == 0} == {"whole"}


def test_task_quota_shares_the_cap_equally():
    assert task_quota(Counter(a=1, b=10, c=10), 9) == {"a": 1, "b": 4, "c": 4}
    assert sum(task_quota(Counter(a=3, b=5, c=100), 50).values()) == 50


def test_eval_subset_is_stratified_and_streams(tmp_path):
    source, cache = tmp_path / "val.jsonl", tmp_path / "cache"
    source.write_text("\n".join(head("stage2_test.jsonl", 40)) + "\n", encoding="utf-8")
    assert eval_subset(source, 0, cache) == source and eval_subset(source, 40, cache) == source
    subset = eval_subset(source, 10, cache)
    assert subset.parent == cache and subset.is_file()
    expected, taken = [], Counter()
    for record in lines(source):  # 5 tasks: the first 2 of each, in file order
        taken[record["task"]] += 1
        if taken[record["task"]] <= 2:
            expected.append(record)
    assert lines(subset) == expected and len(expected) == 10


def test_killed_generate_resumes(tiny_model, tmp_path):
    questions = [{"input": json.loads(line)["input"], "task": json.loads(line)["task"]}
                 for line in head("stage2_test.jsonl", 9)]
    write_rows(tmp_path / "q.csv", lambda: iter(questions))
    argv = ["generate", "--model", str(tiny_model), "--data", "q.csv", "--max-new-tokens", "4", "--batch-tokens",
            "1", "--backend", "hf"]
    kill = killed(tmp_path, *argv, "--out", "a.csv", whole=1)
    assert kill.returncode == -9, kill.stderr[-2000:]
    assert not (tmp_path / "a.csv").exists() and (tmp_path / ".a.csv.partial.jsonl").is_file()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("omics.evaluate.stream.SORT_WINDOW", WINDOW)
        assert cli(mp, tmp_path, *argv, "--out", "a.csv", "--resume") == 0
        assert cli(mp, tmp_path, *argv, "--out", "b.csv") == 0
    assert list(read_rows(tmp_path / "a.csv")) == list(read_rows(tmp_path / "b.csv"))
    assert [r["input"] for r in read_rows(tmp_path / "a.csv")] == [q["input"] for q in questions]
    assert not list(tmp_path.glob(".a.csv*"))  # the partial file and its settings are gone once finished


def test_eval_memory_benchmark_writes_its_points(tmp_path):
    out = tmp_path / "eval_memory.json"
    assert cli(pytest.MonkeyPatch(), tmp_path, "bench", "eval-memory", "--examples", "40", "80", "--answers",
               "reasoning", "--real", "0", "--out", str(out)) == 0
    first, second = json.loads(out.read_text())["results"]
    assert (first["examples"], second["examples"]) == (40, 80) and first["answer_tokens"] > 250
    assert second["peak_rss_mib"] >= second["rss_before_mib"] > 0
    assert second["bytes_per_example_over_first"] == round(
        (second["held_mib"] - first["held_mib"]) * 2**20 / 40)
