"""`omics synthesize` against a scripted OpenAI-compatible teacher (tests/teacher_server.py): real HTTP, the real
openai client, real files. Retries with feedback, rejections, API failures, pacing, resume after SIGKILL,
stratified sampling, the key kept secret, and the output accepted by Stage 3 training."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import SAMPLES, cli, head
from teacher_server import REASONING, TeacherServer

from omics.data.labels import training_label_summary
from omics.evaluate.tasks import build_task_specs
from omics.synthesize.limits import retry_after, retry_delay
from omics.synthesize.prompt import check_reply
from omics.synthesize.select import record_key

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-test-0123456789abcdef-SECRET"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def synthesize(mp: pytest.MonkeyPatch, cwd: Path, teacher: TeacherServer, *extra: str, out: str = "r.jsonl") -> int:
    return cli(mp, cwd, "synthesize", "--data", "data.jsonl", "--out", out, "--base-url", teacher.url,
               "--model", "teacher", *extra)


@pytest.fixture
def data(tmp_path: Path) -> list[dict]:
    """The bundled Stage 2 sample's first 10 lines (4 tasks), in tmp_path/data.jsonl."""
    rows = head("stage2_train.jsonl", 10)
    (tmp_path / "data.jsonl").write_text("".join(f"{row}\n" for row in rows), encoding="utf-8")
    return [json.loads(row) for row in rows]


def test_replies_are_checked_retried_with_feedback_and_rejected_with_the_reason(data, tmp_path, monkeypatch,
                                                                                 capsys, caplog):
    bad_label = {**data[6], "label": 12.5}  # its output says 65.12: no reply could make its answer parse back
    with (tmp_path / "data.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(bad_label) + "\n")
    script = {data[0]["input"]: ["malformed", "wrong"], data[1]["input"]: ["leak", "leak", "leak"],
              data[2]["input"]: ["wrong"], data[3]["input"]: ["429"], data[4]["input"]: ["500"],
              data[5]["input"]: ["slow"], data[7]["input"]: ["restate", "empty", "cut"]}
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with TeacherServer(script) as teacher:
        code = synthesize(monkeypatch, tmp_path, teacher, "--timeout", "2.5", "--max-retries", "2")
    assert code == 0
    accepted = {row["input"]: row for row in lines(tmp_path / "r.jsonl")}
    kept = [d for i, d in enumerate(data) if i not in (1, 7)]
    assert sorted(accepted) == sorted(d["input"] for d in kept)
    for record in kept:  # the teacher's reasoning, the dataset's own answer, label and task
        output = f"<reasoning>{REASONING}</reasoning> <answer>{record['output']}</answer>"
        assert accepted[record["input"]] == {"input": record["input"], "output": output, "label": record["label"],
                                             "task": record["task"]}
    rejected = {row["input"]: row for row in lines(tmp_path / "r.rejected.jsonl")}
    assert {i: (r["reason"], r["attempts"]) for i, r in rejected.items()} == {
        data[1]["input"]: ("mentions that the answer was given", 3),
        data[7]["input"]: ("cut off at max_tokens", 3),
        bad_label["input"]: ("output does not parse back to its label", 0)}
    # each rejected reply was answered with its reason; the line with a bad label was never asked
    first = teacher.asked(data[0]["input"])
    assert [r["behaviour"] for r in first] == ["malformed", "wrong", "good"]
    assert [m["role"] for m in first[2]["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert "malformed tags" in first[2]["messages"][2]["content"]
    assert "answer does not match the label" in first[2]["messages"][4]["content"]
    assert "restates the answer" in teacher.asked(data[7]["input"])[1]["messages"][2]["content"]
    assert "empty reasoning" in teacher.asked(data[7]["input"])[2]["messages"][4]["content"]
    # per line: 3 + 3 (two retries each), 2 (wrong), 2 + 2 + 2 (429, 500, timeout), 1, 3 (restate, empty, cut), 1, 1
    assert len(teacher.requests) == 20
    # API failures retried after their backoff; the 429 no sooner than its Retry-After
    throttled = teacher.asked(data[3]["input"])
    assert [r["behaviour"] for r in throttled] == ["429", "good"]
    assert throttled[1]["time"] - throttled[0]["time"] >= 1.0
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    assert summary["retries"] == {"feedback": 7, "HTTP 429": 1, "HTTP 500": 1, "timeout": 1}
    assert summary["status"] == "complete"
    assert summary["totals"] == {"requested": 11, "accepted": 8, "rejected": 3, "unanswered": 0, "left": 0,
                                 "tokens": {"prompt": 100 * 17, "completion": 20 * 17}}  # the 17 requests answered
    assert summary["per_task"]["gc_content"] | {"tokens": None} == {  # lines 7, 8 and the bad label
        "requested": 3, "accepted": 1, "rejected": 2, "unanswered": 0, "tokens": None, "rejected_by_reason": {
            "cut off at max_tokens": 1, "output does not parse back to its label": 1}}
    # the key was sent, and shown or written nowhere
    assert {r["authorization"] for r in teacher.requests} == {f"Bearer {SECRET}"}
    captured = capsys.readouterr()
    files = [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert all(SECRET not in text for text in [captured.out, captured.err, caplog.text, *files])


@pytest.mark.parametrize("limit, expected", [
    (["--rpm", "120", "--tpm", "0", "--concurrency", "5"], 2.0),  # 2/s, evenly: 0.5 s between requests
    (["--tpm", "7200", "--concurrency", "1"], 2.0),  # 120 tokens/s, 120 saved up, 120 tokens a request (usage)
])
def test_requests_and_tokens_are_paced_to_the_limits(limit, expected, data, tmp_path, monkeypatch):
    """The 5th request of an RPM run (4 x 0.5 s), or the 3rd of a TPM run (waiting for its estimate, >= 120 tokens,
    on top of the 240 the first two used: (240 - 120 + 120) / 120 tokens/s), starts no sooner than `expected` s
    after the first."""
    count = 5 if "--rpm" in limit else 3
    with TeacherServer() as teacher:
        assert synthesize(monkeypatch, tmp_path, teacher, "--limit", str(count), *limit) == 0
    times = sorted(r["time"] for r in teacher.requests)
    assert len(times) == count
    # seen by the server: the first request also opened the connection (~0.2 s), so it arrives late; unpaced, all
    # would arrive within ~0.1 s
    assert expected - 0.3 <= times[-1] - times[0] < expected + 3


def test_a_killed_run_resumes_without_duplicates_or_gaps(data, tmp_path, monkeypatch, caplog):
    """`kill -9` mid-run (a real one, from outside), a torn last line, then the same command twice."""
    (tmp_path / ".env").write_text(f"export OPENAI_API_KEY='{SECRET}'\n")  # the key from ./.env this time
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "r.jsonl"
    with TeacherServer({data[9]["input"]: ["leak"] * 3}, delay=0.2) as teacher:
        argv = ["--data", "data.jsonl", "--out", "r.jsonl", "--base-url", teacher.url, "--model", "teacher",
                "--concurrency", "2"]
        child = subprocess.Popen([sys.executable, "-m", "omics.cli", "synthesize", *argv], cwd=tmp_path,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (out.is_file() and out.read_text().count("\n") >= 3) and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        shown = child.communicate()[0].decode()
        assert 3 <= len(lines(out)) < 9
        with out.open("a") as handle:  # as if killed halfway through writing a line
            handle.write('{"input": "Is this protein sol')
        assert synthesize(monkeypatch, tmp_path, teacher, "--concurrency", "2") == 0
        assert "dropped a last line torn by a kill" in caplog.text
        asked_before = len(teacher.requests)
        assert synthesize(monkeypatch, tmp_path, teacher) == 0  # finished: nothing is asked again
        assert len(teacher.requests) == asked_before
        assert {r["authorization"] for r in teacher.requests} == {f"Bearer {SECRET}"}
    written, rejected = lines(out), lines(tmp_path / "r.rejected.jsonl")
    assert len(written) == 9 and len(rejected) == 1  # each line exactly once, in one file or the other
    keys = [record_key({**row, "output": row["output"].rsplit("<answer>", 1)[1][: -len("</answer>")]})
            for row in written] + [row["key"] for row in rejected]
    assert sorted(keys) == sorted(record_key(d) for d in data)
    assert json.loads((tmp_path / "r.summary.json").read_text())["totals"]["accepted"] == 9
    files = [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p.name != ".env"]
    assert all(SECRET not in text for text in [shown, caplog.text, *files])


def test_other_data_or_settings_are_refused_unless_overwrite(data, tmp_path, monkeypatch, caplog):
    with TeacherServer() as teacher:
        assert synthesize(monkeypatch, tmp_path, teacher, "--limit", "2") == 0
        assert synthesize(monkeypatch, tmp_path, teacher, "--limit", "3") == 0  # a larger limit continues
        assert len(teacher.requests) == 3
        assert synthesize(monkeypatch, tmp_path, teacher, "--per-task", "1") == 2
        assert "r.jsonl was made from other data or settings (per_task differ)" in caplog.text
        assert synthesize(monkeypatch, tmp_path, teacher, "--per-task", "1", "--overwrite") == 0
        assert len(lines(tmp_path / "r.jsonl")) == 4  # one per task, the earlier lines replaced
        (tmp_path / "mine.jsonl").write_text("my own notes\n")
        assert synthesize(monkeypatch, tmp_path, teacher, "--overwrite", out="mine.jsonl") == 2
        assert "mine.jsonl was not written by omics synthesize" in caplog.text
        assert (tmp_path / "mine.jsonl").read_text() == "my own notes\n"
        (tmp_path / "bad.txt").write_text("Explain {input} given {answer}")  # {output} is the answer's name
        assert synthesize(monkeypatch, tmp_path, teacher, "--prompt-template", "bad.txt", out="x.jsonl") == 2
        assert "bad.txt: unknown placeholder(s) {answer}" in caplog.text
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with TeacherServer({"": ["401"]}) as teacher:  # a wrong key: the run stops at once, naming what to check
        assert synthesize(monkeypatch, tmp_path, teacher, out="y.jsonl") == 2
    assert f"the teacher at {teacher.url} refused the request: HTTP 401 (" in caplog.text
    assert "check --base-url (most servers' ends in /v1), --model and the key" in caplog.text
    assert json.loads((tmp_path / "y.summary.json").read_text())["status"] == "stopped"
    assert SECRET not in caplog.text


def test_lines_without_a_reply_are_left_for_the_next_run(data, tmp_path, monkeypatch, caplog):
    with TeacherServer() as teacher:
        url = teacher.url
    # the server is gone before any reply: a wrong --base-url, said at once, not retried line by line
    assert cli(monkeypatch, tmp_path, "synthesize", "--data", "data.jsonl", "--out", "r.jsonl", "--base-url", url,
               "--model", "teacher", "--limit", "3", "--api-retries", "1") == 2
    assert f"cannot reach the teacher at {url} (" in caplog.text and "check --base-url" in caplog.text
    assert json.loads((tmp_path / "r.summary.json").read_text())["status"] == "stopped"
    assert not (tmp_path / "r.jsonl").exists() or lines(tmp_path / "r.jsonl") == []
    with TeacherServer() as teacher:  # the teacher back, at another port: the same synthesis continues
        assert synthesize(monkeypatch, tmp_path, teacher, "--limit", "3") == 0
    assert len(lines(tmp_path / "r.jsonl")) == 3 and len(teacher.requests) == 3

def test_per_task_draws_a_stratified_sample_set_by_the_seed(tmp_path, monkeypatch):
    (tmp_path / "data.jsonl").write_bytes((SAMPLES / "stage2_train.jsonl").read_bytes())  # 5 tasks x 300 lines
    drawn = {}
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with TeacherServer() as teacher:
        for out, seed in (("a.jsonl", "1"), ("b.jsonl", "1"), ("c.jsonl", "2")):
            assert synthesize(monkeypatch, tmp_path, teacher, "--per-task", "3", "--limit", "7", "--seed", seed,
                              out=out) == 0
            drawn[out] = sorted(row["input"] for row in lines(tmp_path / out))
    assert {r["authorization"] for r in teacher.requests} == {"Bearer no-key"}  # no key: a key-less server
    counts = Counter(row["task"] for row in lines(tmp_path / "a.jsonl"))
    # 3 of each of the 5 tasks, interleaved in task order, the first 7 kept: 2, 2, 1, 1, 1
    assert counts == {"NoncodingRNAFamily-dominant": 2, "Solubility-hydrophobic": 2, "emp-gcrich": 1,
                      "gc_content": 1, "sirnaEfficiency-demo": 1}
    summary = json.loads((tmp_path / "a.summary.json").read_text())
    assert {t: s["requested"] for t, s in summary["per_task"].items()} == counts
    assert drawn["a.jsonl"] == drawn["b.jsonl"] != drawn["c.jsonl"]


def test_the_output_trains_as_stage3_data(data, tmp_path, monkeypatch, tiny_model, capsys, caplog):
    caplog.set_level(logging.INFO)
    with TeacherServer() as teacher:
        assert synthesize(monkeypatch, tmp_path, teacher) == 0
    code = cli(monkeypatch, tmp_path, "stage3", "train", "--data", "r.jsonl", "--replay-data", "data.jsonl",
               "--base-model", str(tiny_model), "--set", "max_length=256", "--dry-run", "1")
    out = capsys.readouterr().out
    assert code == 0
    assert f"[[<reasoning>{REASONING}</reasoning> <answer>" in out
    assert "r.jsonl: 10 valid of 10 lines" in caplog.text and "well-formed" not in caplog.text  # none dropped


GC_RICH = {"input": "Is this DNA sequence GC-rich? <dna>GCGCGGCCGCAT<dna>", "task": "emp-gcrich", "label": "positive",
           "output": "The sequence is positive for high GC content."}


@pytest.mark.parametrize("reasoning, verdict", [
    ("We are given a DNA sequence of 12 bases; the given sequence has 10 G or C, 83% GC, above half.", None),
    ("The given answer is positive, and 10 of the 12 bases are G or C.", "mentions that the answer was given"),
    ("We were told the answer; still, 10 of the 12 bases are G or C, so it holds.",
     "mentions that the answer was given"),
    ("As provided in the prompt, 10 of the 12 bases are G or C, so it is rich.", "mentions that the answer was given"),
    ("The sequence is positive for high GC content, clearly.", "restates the answer"),
])
def test_reasoning_that_gives_away_the_answer_or_only_restates_it_is_refused(reasoning, verdict):
    specs = build_task_specs(training_label_summary(SAMPLES / "stage2_train.jsonl"))
    reply = f"<reasoning>{reasoning}</reasoning> <answer>{GC_RICH['output']}</answer>"
    problem = check_reply(reply, True, GC_RICH, specs["emp-gcrich"])
    assert (problem and problem[0]) == verdict


def test_backoff_doubles_with_jitter_and_honours_retry_after():
    rng = random.Random(0)
    delays = [retry_delay(attempt, None, rng) for attempt in range(8)]
    assert all(0.5 * min(60, 2**a) <= d <= min(60, 2**a) for a, d in enumerate(delays))
    assert retry_delay(0, 7.0, rng) == 7.0  # the server's wait, when longer
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past: now
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None
