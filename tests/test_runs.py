"""Nothing is lost: refused output folders, overwrite that sets aside and restores, kill -9, one process per
run, and errors a user can act on. Real CLI runs on the tiny model; kills are real SIGKILLs of subprocesses."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import cli

from omics.data.packing import file_sha256
from omics.errors import UserError, os_error_line
from omics.io import write_json
from omics.model import require_model_dir
from omics.runs import COMMITTED, MANIFEST, Lock, Run

ROOT = Path(__file__).resolve().parent.parent
MODEL, METRICS = Path("archive/models/stage1"), Path("archive/metrics/stage1")
OLD_MODEL = MODEL.parent / ".omics-old-stage1"
FAST = [f"--set={item}" for item in ("max_length=64", "micro_batch_size=2", "grad_accum=1", "lora_r=4",
                                     "warmup_ratio=0", "max_steps=2", "save_steps=2")]
KILL_AT_FINAL_SAVE = """
import os, signal, sys
import omics.train
omics.train.save_trained = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
from omics.cli import main
sys.exit(main(sys.argv[1:]))
"""
HOLD_AFTER_LOCKING = """
import sys, time
import omics.train
def hold(*a, **k):
    print("holding", flush=True)
    time.sleep(600)
omics.train.build_dataset = hold
from omics.cli import main
sys.exit(main(sys.argv[1:]))
"""


def train_args(base: Path, *extra: str) -> list[str]:
    return ["stage1", "train", "--data", "data/train.txt", "--base-model", str(base), *FAST, *extra]


def omics_process(code: str, root: Path, *argv: str, **popen) -> subprocess.Popen:
    """`omics ARGV` in a fresh Python process (with `code` patching in a fault first), run in `root`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *argv], cwd=root, env=env, text=True, **popen)


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) → its SHA-256."""
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tiny_model, tmp_path_factory):
    """A project with one finished 2-step Stage 1 run (its fingerprint kept to compare against)."""
    root = tmp_path_factory.mktemp("runs")
    (root / "data").mkdir()
    (root / "data" / "train.txt").write_text("".join(f"{'ACGT' * (5 + i % 7)}\n" for i in range(24)))
    with pytest.MonkeyPatch.context() as mp:
        assert cli(mp, root, *train_args(tiny_model)) == 0
    return SimpleNamespace(root=root, base=tiny_model, archive=fingerprint(root / "archive"))


@pytest.fixture
def project(finished, tmp_path) -> Path:
    shutil.copytree(finished.root, tmp_path / "project")
    return tmp_path / "project"


# ---------------------------------------------------------------------------------------- refused folders


@pytest.mark.parametrize(("flags", "says"), [
    (["--output-dir", "base"], "overlaps --base-model"),
    (["--output-dir", "base/stage1"], "overlaps --base-model"),
    (["--metrics-dir", "data"], "overlaps --data"),  # the folder holding the data file
    (["--output-dir", "."], "is the project root"),
    (["--metrics-dir", ".."], "is the project root or contains it"),
    (["--output-dir", "out", "--metrics-dir", "out/metrics"], "--output-dir out overlaps --metrics-dir"),
])
def test_dangerous_output_folders_are_refused(tiny_model, tmp_path, monkeypatch, caplog, flags, says):
    shutil.copytree(tiny_model, tmp_path / "base")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.txt").write_text("ACGT\n")
    before = fingerprint(tmp_path)
    assert cli(monkeypatch, tmp_path, *train_args(tmp_path / "base", "--overwrite", *flags)) == 2
    assert says in caplog.text
    assert fingerprint(tmp_path) == before and not (tmp_path / "archive").exists()


def test_folder_with_foreign_files_is_refused(finished, tmp_path, monkeypatch, caplog):
    shutil.copytree(finished.root / "data", tmp_path / "data")
    mine = tmp_path / "mine"
    for name in ("config.json", "notes.txt", "a.csv", "b.csv", "c.csv"):
        (mine / name).parent.mkdir(exist_ok=True)
        (mine / name).write_text(name)
    before = fingerprint(mine)
    assert cli(monkeypatch, tmp_path, *train_args(finished.base, "--overwrite", "--output-dir", "mine")) == 2
    assert "mine holds files omics did not write (a.csv, b.csv, c.csv and 2 more)" in caplog.text
    assert fingerprint(mine) == before


def test_evaluation_into_the_model_folder_is_refused(project, monkeypatch, caplog):
    before = fingerprint(project / MODEL)
    assert cli(monkeypatch, project, "stage1", "evaluate", "--data", "data/train.txt", "--model", str(MODEL),
               "--metrics-dir", str(MODEL / "eval")) == 2
    assert "overlaps --model" in caplog.text and fingerprint(project / MODEL) == before


# ------------------------------------------------------------------------------- overwrite: aside, back


def test_a_model_folder_without_a_manifest_is_never_replaced(project, finished, monkeypatch, caplog):
    """A downloaded base model looks like a model omics saved: without omics' manifest it is not omics'."""
    downloaded = project / "Meta-Llama-3.1-8B"
    shutil.copytree(finished.base, downloaded)
    before = fingerprint(downloaded)
    for command in (train_args(finished.base, "--overwrite", "--output-dir", str(downloaded)),
                    ["score", "--predictions", "p.jsonl", "--out", str(downloaded), "--overwrite"]):
        assert cli(monkeypatch, project, *command) == 2
        assert "holds files omics did not write (config.json" in caplog.text and "never replaced" in caplog.text
    assert fingerprint(downloaded) == before


def test_overwrite_sets_the_old_run_aside_until_the_new_one_is_saved(project, finished, monkeypatch):
    """Also a legacy metrics folder (no manifest): the files omics writes are its own."""
    (project / METRICS / MANIFEST).unlink()
    import omics.train

    seen = {}
    real_save = omics.train.save_trained

    def save_and_look(*args, **kwargs):
        seen["aside"] = fingerprint(project / OLD_MODEL)
        seen["model_dir"] = sorted(p.name for p in (project / MODEL).iterdir())
        return real_save(*args, **kwargs)

    monkeypatch.setattr(omics.train, "save_trained", save_and_look)
    assert cli(monkeypatch, project, *train_args(finished.base, "--overwrite", "--set=learning_rate=1e-2")) == 0
    old_model = {k.removeprefix("models/stage1/"): v for k, v in finished.archive.items()
                 if k.startswith("models/stage1/") and not k.endswith(MANIFEST)}
    assert {k: v for k, v in seen["aside"].items() if k in old_model} == old_model  # the whole old model
    assert seen["model_dir"] == [MANIFEST, "checkpoints"]  # the new run, before its final save
    assert not list((project / MODEL.parent).glob(".omics-*-stage1"))  # set aside: deleted once the new run completed
    new = fingerprint(project / MODEL)
    assert new["model.safetensors"] != old_model["model.safetensors"]
    manifest = json.loads((project / MODEL / MANIFEST).read_text())
    assert manifest["open"] is None and "model.safetensors" in manifest["entries"] and "checkpoints" in manifest[
        "entries"]


def test_interrupted_overwrite_puts_the_old_run_back(project, finished, monkeypatch):
    import omics.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(omics.train, "save_trained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli(monkeypatch, project, *train_args(finished.base, "--overwrite"))
    assert fingerprint(project / "archive") == finished.archive


def test_sigkill_during_overwrite_keeps_the_old_run_and_the_next_command_restores_it(project, finished,
                                                                                     monkeypatch, caplog):
    killed = omics_process(KILL_AT_FINAL_SAVE, project, *train_args(finished.base, "--overwrite"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert killed.wait(timeout=300) == -signal.SIGKILL
    assert not (project / MODEL / "config.json").exists()  # the new run never saved its model
    assert (project / OLD_MODEL / "model.safetensors").is_file()  # the old one is set aside, whole
    caplog.set_level(logging.WARNING, logger="omics")
    assert cli(monkeypatch, project, *train_args(finished.base)) == 2  # the next command: refused, after...
    assert "restored the previous run" in caplog.text and "a previous run exists" in caplog.text
    assert fingerprint(project / "archive") == finished.archive  # ...putting the old run back, bit for bit


def test_reading_a_model_whose_overwrite_was_killed_says_where_the_old_one_is(tmp_path):
    (tmp_path / ".omics-old-stage2").mkdir()
    (tmp_path / ".omics-old-stage2" / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"previous model aside in .*\.omics-old-stage2: rerun that training"):
        require_model_dir(tmp_path / "stage2", "Train it first.")


def test_failed_second_run_of_one_folder_restores_both_folders(tmp_path, monkeypatch):
    """A kill leaves two folders set aside; the next command on either restores both (one journal)."""
    monkeypatch.chdir(tmp_path)
    targets = {"--output-dir": (tmp_path / "model", None), "--metrics-dir": (tmp_path / "metrics", None)}
    with Run(targets, {}) as run:
        run.begin(overwrite=False)
        (tmp_path / "model" / "config.json").write_text("old")
        (tmp_path / "metrics" / "parameters.json").write_text("old")
    dying = Run(targets, {}).__enter__()
    dying.begin(overwrite=True)
    (tmp_path / "model" / "checkpoints").mkdir()
    dying._unlock()  # what the kernel does for a killed process: its locks go, nothing else happens
    assert not (tmp_path / "model" / "config.json").exists()
    with Run({"--metrics-dir": (tmp_path / "metrics", ("metrics.json",))}, {}):  # e.g. an evaluation
        pass
    assert (tmp_path / "model" / "config.json").read_text() == "old"
    assert (tmp_path / "metrics" / "parameters.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics", "model"]  # nothing set aside remains
    assert not (tmp_path / "model" / "checkpoints").exists()


def test_kill_while_deleting_the_old_run_keeps_the_new_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    targets = {"--output-dir": (tmp_path / "model", None), "--metrics-dir": (tmp_path / "metrics", None)}
    with Run(targets, {}) as run:
        run.begin(overwrite=False)
        (tmp_path / "model" / "config.json").write_text("old")
    dying = Run(targets, {}).__enter__()
    dying.begin(overwrite=True)
    (tmp_path / "model" / "config.json").write_text("new")
    (tmp_path / ".omics-old-model" / COMMITTED).touch()  # the first step of deleting the old run
    dying._unlock()
    with Run(targets, {}):
        pass
    assert (tmp_path / "model" / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics", "model"]


# ----------------------------------------------------------------------------------- one process per run


def test_second_process_gets_the_holders_pid_and_command(project, finished, monkeypatch, caplog):
    holder = omics_process(HOLD_AFTER_LOCKING, project, *train_args(finished.base, "--overwrite"),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert cli(monkeypatch, project, *train_args(finished.base, "--resume")) == 2
        assert f"is in use by PID {holder.pid} (omics stage1 train --data data/train.txt" in caplog.text
        assert cli(monkeypatch, project, "stage1", "evaluate", "--data", "data/train.txt") == 2
        assert caplog.text.count(f"in use by PID {holder.pid}") == 2
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with Lock(project / MODEL), Lock(project / METRICS):  # kill -9 left no stale lock
        pass
    assert fingerprint(project / "archive") == finished.archive  # the refused second run changed nothing


# ------------------------------------------------------------------------------------------------ errors


def predictions_file(path: Path) -> Path:
    rows = [{"task": "promoter", "input": "ACGT", "label": label, "prediction": None, "generated": label,
             "valid": None, "format_ok": None} for label in ("positive", "negative")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def error_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_directory_given_as_a_file_and_file_as_a_folder(tmp_path, monkeypatch, caplog):
    (tmp_path / "folder.jsonl").mkdir()
    assert cli(monkeypatch, tmp_path, "score", "--predictions", "folder.jsonl") == 2
    predictions_file(tmp_path / "p.jsonl")
    assert cli(monkeypatch, tmp_path, "score", "--predictions", "p.jsonl", "--out", "p.jsonl.d") == 0
    (tmp_path / "file").write_text("x")
    assert cli(monkeypatch, tmp_path, "score", "--predictions", "p.jsonl", "--out", "file") == 2
    directory, file = error_lines(caplog)
    assert directory == "--predictions folder.jsonl is a folder, not a file; pass a file"
    assert file == f"{tmp_path / 'file'} is a file, not a folder; pass a folder"
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.ERROR)  # no traceback


def test_permission_denied_is_one_line(tmp_path):
    shared = Path(os.environ.get("TMPDIR", "/tmp")) / f"omics-perm-{os.getpid()}"
    (shared / "locked").mkdir(parents=True)
    try:
        predictions_file(shared / "p.jsonl")
        shared.chmod(0o755)
        (shared / "locked").chmod(0o555)
        # as root, permissions do not apply: become nobody once what runs up to the lock is imported (/root is private)
        drop = "os.setgid(65534); os.setuid(65534)" if os.geteuid() == 0 else ""
        code = (f"import locale, os, sys, omics.cli, omics.runs, omics.evaluate.report\n{drop}\n"
                "sys.exit(omics.cli.main(sys.argv[1:]))")
        proc = omics_process(code, shared,
                             "score", "--predictions", "p.jsonl", "--out", "locked/out",
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=300)
    finally:
        (shared / "locked").chmod(0o755)
        shutil.rmtree(shared)
    assert proc.returncode == 2
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "Permission denied" in line]
    assert errors == [f"{errors[0][:8]} omics: {shared.resolve()}/locked/.out.omics-lock: Permission denied; "
                      "check its permissions (ls -l) or choose another path"]


@pytest.mark.parametrize(("code", "says"), [
    ("EROFS", "/data/x.json: Read-only file system; the file system is read-only; choose a writable path"),
    ("ENOSPC", "/data/x.json: No space left on device; the disk is full; free space or choose another disk"),
])
def test_file_system_errors_name_the_path_and_what_to_do(code, says):
    import errno

    number = getattr(errno, code)
    assert os_error_line(OSError(number, os.strerror(number), "/data/x.json")) == says


def test_a_bug_keeps_its_traceback_and_debug_shows_every_one(tmp_path, monkeypatch, caplog):
    import omics.evaluate.scoring

    predictions_file(tmp_path / "p.jsonl")

    def bug(*args):
        raise ValueError("an omics bug")

    assert cli(monkeypatch, tmp_path, "--debug", "score", "--predictions", "missing.jsonl") == 2
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info and "missing.jsonl" in record.getMessage()  # the traceback, on request
    monkeypatch.setattr(omics.evaluate.scoring, "rescore", bug)
    with pytest.raises(ValueError, match="an omics bug"):  # not caught: Python prints it, exit code 1
        cli(monkeypatch, tmp_path, "score", "--predictions", "p.jsonl")


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_results_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_resume_with_other_data_is_refused(project, finished, monkeypatch, caplog):
    (project / METRICS / "run_summary.json").unlink()  # as if killed before the end
    (project / "data" / "train.txt").write_text("ACGTACGTAC\n" * 24)
    assert cli(monkeypatch, project, *train_args(finished.base, "--resume")) == 2
    assert "--resume: --data differ from what the run being resumed trained on" in caplog.text
