"""`omics stage1 train` end to end, in-process, on the tiny model: artifacts, refusal, overwrite, resume."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import cli
from transformers import AutoModelForCausalLM, AutoTokenizer

from omics.data.packing import file_sha256

MODEL = Path("archive/models/stage1")
METRICS = Path("archive/metrics/stage1")
FAST = ["--set", "max_length=64", "--set", "micro_batch_size=2", "--set", "grad_accum=1", "--set", "lora_r=4",
        "--set", "logging_steps=1", "--set", "warmup_ratio=0"]
BAD_LINES = {7: "not a sequence!", 23: ">chr1 a FASTA header"}



def sequence_lines(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        alphabet, prefix = [("ACGT", ""), ("ACGU", ""), ("ACDEFGHIKLMNPQRSTVWY", "M")][i % 3]
        lines.append(prefix + "".join(rng.choice(alphabet) for _ in range(rng.randint(30, 150))))
    return lines


def train_args(tiny_model: Path, *extra: str, data: str = "train.txt") -> list[str]:
    return ["stage1", "train", "--data", data, "--base-model", str(tiny_model), *FAST, *extra]


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    """One finished 2-step run with periodic evaluation and a checkpoint at step 2."""
    root = tmp_path_factory.mktemp("stage1-run")
    lines = sequence_lines(40, seed=0)
    for number, bad in BAD_LINES.items():
        lines[number - 1] = bad
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "eval.txt").write_text("\n".join(sequence_lines(4, seed=1)) + "\n")
    with pytest.MonkeyPatch.context() as mp:
        rc = cli(mp, root, *train_args(tiny_model, "--eval-data", "eval.txt", "--set", "max_steps=2",
                                       "--set", "save_steps=2", "--set", "eval_steps=2"))
    assert rc == 0
    return SimpleNamespace(root=root, model=root / MODEL, metrics=root / METRICS,
                           train_args=train_args(tiny_model, "--eval-data", "eval.txt"))


@pytest.fixture
def copy_of_run(run, tmp_path) -> Path:
    """The finished run copied (timestamps kept), for tests that change it."""
    shutil.copytree(run.root, tmp_path / "copy")
    return tmp_path / "copy"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def scalars(events: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


# ------------------------------------------------------------------------------------------ artifacts


def test_train_writes_every_artifact(run):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                 "checkpoints/checkpoint-2/trainer_state.json"):
        assert (run.model / name).is_file(), name
    for name in ("parameters.json", "data_report.json", "run_summary.json"):
        assert (run.metrics / name).is_file(), name
    assert list((run.metrics / "tensorboard").glob("events.out.tfevents.*"))
    assert not (run.model / ".staging").exists()
    assert not list(run.root.rglob(".*.tmp")) and not list(run.root.rglob("*.tmp"))
    assert list((run.model.parent / ".omics-cache").glob("stage1-*/blocks.arrow"))  # the cache: beside the model


def test_parameters_json(run):
    params = read_json(run.metrics / "parameters.json")
    assert params["stage"] == 1
    config = params["config"]
    assert (config["max_steps"], config["lora_r"], config["max_length"], config["finetune"]) == (2, 4, 64, "lora")
    data = params["data"]
    assert data["sha256"] == file_sha256(run.root / "train.txt")
    assert data["bytes"] == (run.root / "train.txt").stat().st_size
    assert Path(data["path"]) == (run.root / "train.txt").resolve()
    assert params["eval_data"]["sha256"] == file_sha256(run.root / "eval.txt")
    assert {"torch", "transformers", "peft", "python"} <= set(params["versions"])
    assert params["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", params["git_commit"])
    assert 0 < params["parameters"]["trainable"] < params["parameters"]["total"]
    assert params["repaired_embedding_rows"] == []  # Stage 1 does not use the chat format


def test_data_report_names_the_skipped_lines(run):
    report = read_json(run.metrics / "data_report.json")["report"]
    assert report["lines"] == 40 and report["valid"] == 38 and report["skipped"] == 2
    assert sorted(n for lines in report["first_skipped_lines"].values() for n in lines) == sorted(BAD_LINES)
    assert report["first_skipped_lines"]["FASTA header (only sequence lines are read)"] == [23]
    assert set(report["molecules"]) == {"dna", "rna", "protein"}


def test_run_summary(run):
    summary = read_json(run.metrics / "run_summary.json")
    assert summary["steps"] == 2 and summary["stage"] == 1
    assert 0 < summary["tokens_seen"] <= 2 * 2 * 64  # steps x micro batch x block length
    train_logs = [h for h in summary["log_history"] if "loss" in h]
    assert [h["step"] for h in train_logs] == [1, 2]
    assert any("eval_loss" in h for h in summary["log_history"])
    assert summary["blocks"] > 0


def test_tensorboard_events(run):
    tags = scalars(run.metrics / "tensorboard")
    for tag in ("train/loss", "train/learning_rate", "train/grad_norm", "eval/loss"):
        assert tag in tags, (tag, sorted(tags))
    assert [step for step, _ in tags["train/loss"]] == [1, 2]
    assert [step for step, _ in tags["eval/loss"]] == [2]
    assert all(value > 0 for _, value in tags["train/loss"])


def test_saved_model_reloads_and_generates(run):
    model = AutoModelForCausalLM.from_pretrained(run.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(run.model)
    inputs = tokenizer("ACGTACGT", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 4)
    assert tokenizer.pad_token == "<|finetune_right_pad_id|>"


# --------------------------------------------------------------------------------- refuse / overwrite


def test_second_run_is_refused(run, monkeypatch, caplog):
    files = [run.model / "model.safetensors", run.model / "config.json", run.metrics / "parameters.json"]
    before = {f: f.stat().st_mtime_ns for f in files}
    assert cli(monkeypatch, run.root, *run.train_args) == 2
    assert "a previous run exists" in caplog.text and "--overwrite" in caplog.text
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert (run.model / "checkpoints" / "checkpoint-2").is_dir()


def test_overwrite_replaces_the_run(copy_of_run, tiny_model, monkeypatch):
    model_file = copy_of_run / MODEL / "model.safetensors"
    before = model_file.stat().st_mtime_ns
    assert cli(monkeypatch, copy_of_run, *train_args(tiny_model, "--overwrite", "--set", "max_steps=1",
                                                      "--set", "save_steps=1")) == 0
    assert model_file.stat().st_mtime_ns > before
    assert read_json(copy_of_run / METRICS / "run_summary.json")["steps"] == 1
    checkpoints = sorted(p.name for p in (copy_of_run / MODEL / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-1"]  # the old run's checkpoint-2 went with it
    assert read_json(copy_of_run / METRICS / "parameters.json")["eval_data"] is None


def test_overwrite_with_missing_data_keeps_previous_model(copy_of_run, tiny_model, monkeypatch):
    args = train_args(tiny_model, "--overwrite", data="typo.txt")
    assert cli(monkeypatch, copy_of_run, *args) == 2
    assert (copy_of_run / MODEL / "model.safetensors").is_file()


def test_resume_and_overwrite_contradict(run, monkeypatch, caplog):
    assert cli(monkeypatch, run.root, *run.train_args, "--resume", "--overwrite") == 2
    assert "contradict" in caplog.text


# ------------------------------------------------------------------------------------------- resume


def test_resume_refused_when_the_run_finished(run, monkeypatch, caplog):
    assert cli(monkeypatch, run.root, *run.train_args, "--resume") == 2
    assert "this run is finished" in caplog.text


def test_resume_without_checkpoint(tiny_model, tmp_path, monkeypatch, caplog):
    (tmp_path / "train.txt").write_text("ACGT\n")
    assert cli(monkeypatch, tmp_path, *train_args(tiny_model, "--resume")) == 2
    assert "no complete checkpoint under" in caplog.text and "checkpoints" in caplog.text


def test_resume_continues_from_checkpoint(copy_of_run, run, monkeypatch):
    """A run killed after its step-2 checkpoint (no final config.json, no run summary) continues to step 4."""
    (copy_of_run / MODEL / "config.json").unlink()
    (copy_of_run / METRICS / "run_summary.json").unlink()
    tensorboard = copy_of_run / METRICS / "tensorboard"
    old_events = set(tensorboard.iterdir())
    checkpoint_state = read_json(copy_of_run / MODEL / "checkpoints/checkpoint-2/trainer_state.json")

    assert cli(monkeypatch, copy_of_run, *run.train_args, "--resume", "--set", "learning_rate=1e-2") == 2
    assert not (copy_of_run / MODEL / "config.json").exists()  # refused: the lr would be recorded, not used
    assert cli(monkeypatch, copy_of_run, *run.train_args, "--resume", "--set", "max_steps=4",
               "--set", "save_steps=2", "--set", "eval_steps=2") == 0  # running longer is allowed

    summary = read_json(copy_of_run / METRICS / "run_summary.json")
    assert summary["steps"] == 4
    assert summary["tokens_seen"] > checkpoint_state["num_input_tokens_seen"]
    history = summary["log_history"]
    # steps 1-2 come verbatim from the checkpoint (timings included): restored, not retrained
    assert history[: len(checkpoint_state["log_history"])] == checkpoint_state["log_history"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]
    (new_events,) = set(tensorboard.iterdir()) - old_events
    assert [step for step, _ in scalars(new_events)["train/loss"]] == [3, 4]  # this run trained 3 and 4 only
    assert (copy_of_run / MODEL / "config.json").is_file()
    assert (copy_of_run / MODEL / "checkpoints" / "checkpoint-4").is_dir()


# ------------------------------------------------------------------------------------------ learning


def test_loss_goes_down(tiny_model, tmp_path, monkeypatch):
    rng = random.Random(3)
    lines = ["".join(rng.choice("ACGT") for _ in range(60)) for _ in range(20)]
    (tmp_path / "repeat.txt").write_text("\n".join(lines * 5) + "\n")
    args = train_args(tiny_model, "--set", "finetune=full", "--set", "learning_rate=3e-3", "--set", "max_steps=12",
                      "--set", "max_length=64", "--set", "save_steps=100", "--set", "gradient_checkpointing=false",
                      data="repeat.txt")
    assert cli(monkeypatch, tmp_path, *args) == 0
    history = read_json(tmp_path / METRICS / "run_summary.json")["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < losses[0] - 0.1, losses


# ------------------------------------------------------------------------------------------- errors


def test_missing_base_model(tmp_path, monkeypatch, caplog):
    (tmp_path / "train.txt").write_text("ACGT\n")
    missing = tmp_path / "no-such-model"
    assert cli(monkeypatch, tmp_path, "stage1", "train", "--data", "train.txt", "--base-model", str(missing)) == 2
    assert f"no model at {missing}" in caplog.text and "--base-model" in caplog.text
    assert not (tmp_path / "archive").exists()  # nothing created before the check


def test_default_base_model_is_named(tmp_path, monkeypatch, caplog):
    (tmp_path / "train.txt").write_text("ACGT\n")
    assert cli(monkeypatch, tmp_path, "stage1", "train", "--data", "train.txt") == 2
    assert "no model at Meta-Llama-3.1-8B" in caplog.text


def test_unknown_config_key(tiny_model, tmp_path, monkeypatch, caplog):
    (tmp_path / "train.txt").write_text("ACGT\n")
    assert cli(monkeypatch, tmp_path, *train_args(tiny_model, "--set", "lerning_rate=1")) == 2
    assert "unknown config keys ['lerning_rate']" in caplog.text


@pytest.mark.parametrize("name, content", [
    ("missing.txt", None),
    ("junk.txt", "hello world\n1234\n"),  # (a bare "hello" is a valid protein: H E L L O)
    ("empty.txt", ""),
])
def test_unusable_data_file(tiny_model, tmp_path, monkeypatch, caplog, name, content):
    if content is not None:
        (tmp_path / name).write_text(content)
    assert cli(monkeypatch, tmp_path, *train_args(tiny_model, data=name)) == 2
    assert name in caplog.text
    assert not (tmp_path / MODEL / "config.json").exists()


def test_evaluate_a_copied_model_reads_its_card(run, tiny_model, tmp_path, monkeypatch, capfd):
    """The base model and training's max_length come from omics_model.json, not from a metrics folder; the
    likelihood progress bar counts sequences against the file's total (a long one spans several windows)."""
    copied = shutil.copytree(run.model, tmp_path / "copied", ignore=shutil.ignore_patterns("checkpoints"))
    (tmp_path / "held.txt").write_text("\n".join([*sequence_lines(3, seed=2), "ACGT" * 100]) + "\n\n")
    assert cli(monkeypatch, tmp_path, "stage1", "evaluate", "--data", "held.txt", "--model", str(copied),
               "--metrics-dir", "m") == 0
    assert re.search(r"likelihood copied: 100%.*\| 4/4 ", capfd.readouterr().err.replace("\r", "\n"))
    meta = read_json(tmp_path / "m" / "likelihood.json")["meta"]
    assert meta["base_model"] == str(tiny_model.resolve())
    assert meta["max_length"] == 64 and meta["wrap_tags"] is False  # the run's (--set max_length=64)
