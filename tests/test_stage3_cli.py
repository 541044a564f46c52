"""`omics stage3 train` with replay and `stage3 evaluate` on the tiny model; `omics compare` on known documents."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import cli, head

from omics.config import REASONING_PROMPT, SYSTEM_PROMPT, TrainConfig
from omics.data.instructions import PromptEncoder, chat_examples, reasoning_records
from omics.data.packing import IGNORE, file_sha256
from omics.data.validate import DataReport
from omics.model import load_tokenizer

SAMPLES = Path(__file__).resolve().parent.parent / "omics" / "samples"
FAST = [f"--set={item}" for item in (
    "max_length=256", "micro_batch_size=4", "grad_accum=1", "max_steps=3", "save_steps=3", "logging_steps=1",
    "lora_r=4", "lora_alpha=8", "gradient_checkpointing=false",
    # the Stage 3 preset fully fine-tunes with 8-bit AdamW updated in backward: LoRA + AdamW keeps this CPU test small
    "finetune=lora", "optimizer=adamw", "optimizer_in_backward=false", "replay_ratio=1.0", "keep_checkpoints=false")]
EVAL_FAST = ["--max-new-tokens", "8", "--max-samples", "2"]
REASONING_LINES = 20
BAD_REASONING = {4: "The sequence is positive for high GC content.",  # no tags
                 9: "<reasoning>counted</reasoning> <answer>positive"}  # unclosed




def reasoning_lines() -> list[str]:
    lines = head("stage3_train.jsonl", REASONING_LINES)
    for number, output in BAD_REASONING.items():
        record = json.loads(lines[number - 1])
        record["output"] = output
        lines.insert(number - 1, json.dumps(record))
    return lines


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("stage3-run")
    (root / "reasoning.jsonl").write_text("\n".join(reasoning_lines()) + "\n", encoding="utf-8")
    (root / "replay.jsonl").write_text("\n".join(head("stage2_train.jsonl", 40)) + "\n", encoding="utf-8")
    (root / "test.jsonl").write_text("\n".join(head("stage2_test.jsonl", 40)) + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        codes = {
            "train": cli(mp, root, "stage3", "train", "--data", "reasoning.jsonl", "--replay-data", "replay.jsonl",
                         "--base-model", str(tiny_model), "--output-dir", "models/stage3",
                         "--metrics-dir", "metrics/stage3", *FAST),
            "evaluate": cli(mp, root, "stage3", "evaluate", "--data", "test.jsonl", "--model", "models/stage3",
                            "--metrics-dir", "metrics/stage3", "--mode", "both", *EVAL_FAST),
        }
    return SimpleNamespace(root=root, codes=codes, model=root / "models/stage3", metrics=root / "metrics/stage3")


def test_commands_succeed(run):
    assert run.codes == {"train": 0, "evaluate": 0}
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        assert (run.model / name).is_file(), name
    for name in ("parameters.json", "data_report.json", "run_summary.json"):
        assert (run.metrics / name).is_file(), name
    assert not (run.model / "checkpoints").exists()  # keep_checkpoints=false: deleted once the model is saved


def test_data_report_replay_matches_kept_reasoning(run):
    data = read_json(run.metrics / "data_report.json")
    report = data["report"]
    kept = REASONING_LINES  # the inserted bad lines are skipped
    assert report["lines"] == REASONING_LINES + len(BAD_REASONING)
    assert sorted(n for lines in report["first_skipped_lines"].values() for n in lines) == sorted(BAD_REASONING)
    replay = data["replay"]
    assert replay["examples"] == round(1.0 * kept) == kept
    assert replay["ratio"] == 1.0
    assert replay["lines"] == 40 and replay["valid"] == 40
    # the task summary covers what was trained: reasoning + replayed examples
    assert sum(s["n"] for s in data["task_summary"].values()) == 2 * kept


def test_parameters_record_the_replay_file(run):
    params = read_json(run.metrics / "parameters.json")
    assert params["stage"] == 3
    assert params["extra_data"]["replay"]["sha256"] == file_sha256(run.root / "replay.jsonl")
    assert params["config"]["replay_ratio"] == 1.0
    assert read_json(run.metrics / "run_summary.json")["steps"] == 3


def test_evaluate_reports_format_compliance(run):
    doc = read_json(run.metrics / "metrics.json")
    tasks = {json.loads(line)["task"] for line in head("stage2_test.jsonl", 40)}
    assert set(doc["tasks"]) == tasks
    rows = [json.loads(line) for line in (run.metrics / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(tasks)
    assert all(isinstance(r["format_ok"], bool) for r in rows)
    for task, result in doc["tasks"].items():
        ok = [r["format_ok"] for r in rows if r["task"] == task]
        assert result["format_compliance"] == pytest.approx(100 * sum(ok) / len(ok), abs=0.01)
        assert {"mean", "median", "max"} <= set(result["output_words"])
    assert doc["meta"]["stage"] == 3
    title = (run.metrics / "metrics.md").read_text().splitlines()[0]
    assert title == "# stage3 evaluation (reasoning mode) of the stage3 model models/stage3"


def test_score_keeps_the_reasoning_rules(run, monkeypatch):
    argv = ["score", "--predictions", "metrics/stage3/predictions.jsonl", "--out", "rescored"]
    assert cli(monkeypatch, run.root, *argv) == 0
    original, rescored = read_json(run.metrics / "metrics.json"), read_json(run.root / "rescored/metrics.json")
    assert rescored["tasks"] == original["tasks"]


def test_compare_with_a_stage2_evaluation_of_the_same_file(run, monkeypatch, capsys):
    stage3 = read_json(run.metrics / "metrics.json")
    stage2 = {"meta": {"data_sha256": stage3["meta"]["data_sha256"]}, "overall": {"mixed_score_mean": 1.0},
              "tasks": {task: {"mixed_score": 1.0} for task in stage3["tasks"]}}
    (run.root / "metrics/stage2").mkdir(parents=True)
    (run.root / "metrics/stage2/metrics.json").write_text(json.dumps(stage2))
    assert cli(monkeypatch, run.root, "compare", "--stages", "2", "3", "--metrics-root", "metrics") == 0
    out = capsys.readouterr().out
    again = ["compare", "--stages", "2", "3", "--metrics-root", "metrics"]
    assert cli(monkeypatch, run.root, *again) == 2  # comparison.md exists: replaced only when asked
    assert cli(monkeypatch, run.root, *again, "--overwrite") == 0
    direct = read_json(run.metrics / "direct" / "metrics.json")["tasks"]  # --mode both: a column of its own
    assert "| task | stage2 | stage3 | stage3 direct | Δ stage3-stage2 | Δ stage3 direct-stage3 |" in out
    for task, result in stage3["tasks"].items():
        score, direct_score = result["mixed_score"], direct[task]["mixed_score"]
        assert (f"| {task} | 1.00 | {score:.2f} | {direct_score:.2f} | {score - 1:+.2f} | "
                f"{direct_score - score:+.2f} |") in out
    assert "Warning" not in out
    assert (run.root / "metrics/comparison.md").read_text().strip() == out.strip()


# ------------------------------------------------------------------------------------------------ compare

STAGE2 = {
    "meta": {"data_sha256": "a" * 64},
    "overall": {"mixed_score_mean": 55.25},
    "tasks": {
        "emp-x": {"type": "binary", "mixed_score": 40.0, "paper_metric": {"name": "MCC", "value": 10.0}},
        "reg-y": {"type": "regression", "mixed_score": 70.5, "paper_metric": {"name": "Spearman", "value": 50.0}},
    },
}
STAGE3 = {
    "meta": {"data_sha256": "a" * 64},
    "overall": {"mixed_score_mean": 48.5},
    "tasks": {
        "emp-x": {"type": "binary", "mixed_score": 55.5, "paper_metric": {"name": "MCC", "value": 20.0}},
        "reg-y": {"type": "regression", "mixed_score": 60.0, "paper_metric": {"name": "Spearman", "value": 45.5}},
        "cls-z": {"type": "multiclass", "mixed_score": 30.0, "paper_metric": {"name": "accuracy", "value": 30.0}},
    },
}


@pytest.fixture
def metrics_root(tmp_path) -> Path:
    for stage, doc in (("stage2", STAGE2), ("stage3", STAGE3)):
        (tmp_path / "metrics" / stage).mkdir(parents=True)
        (tmp_path / "metrics" / stage / "metrics.json").write_text(json.dumps(doc))
    return tmp_path / "metrics"


def test_compare_prints_per_task_deltas(metrics_root, monkeypatch, capsys):
    assert cli(monkeypatch, metrics_root.parent, "compare", "--stages", "2", "3", "--metrics-root", "metrics") == 0
    out = capsys.readouterr().out
    assert "| emp-x | 40.00 | 55.50 | +15.50 |" in out
    assert "| reg-y | 70.50 | 60.00 | -10.50 |" in out
    assert "| cls-z | — | 30.00 | — |" in out
    assert "| mean (all tasks) | 55.25 | 48.50 | -6.75 |" in out
    assert "| emp-x | MCC | 10.00 | 20.00 | +10.00 |" in out
    assert "| reg-y | Spearman | 50.00 | 45.50 | -4.50 |" in out
    assert "Warning" not in out
    saved = (metrics_root / "comparison.md").read_text(encoding="utf-8")
    assert saved.strip() == out.strip()


def test_compare_warns_about_different_data(metrics_root, monkeypatch, capsys):
    doc = {**STAGE3, "meta": {"data_sha256": "b" * 64}}
    (metrics_root / "stage3" / "metrics.json").write_text(json.dumps(doc))
    assert cli(monkeypatch, metrics_root.parent, "compare", "--stages", "2", "3", "--metrics-root", "metrics") == 0
    assert "different data files" in capsys.readouterr().out


def test_compare_missing_stage(metrics_root, monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="omics")
    argv = ["compare", "--stages", "1", "2", "3", "--metrics-root", "metrics"]
    assert cli(monkeypatch, metrics_root.parent, *argv) == 2
    assert "stage1" in caplog.text
    assert not (metrics_root / "comparison.md").exists()


def test_default_full_finetuning_path_trains_and_saves(tmp_path, tiny_model, monkeypatch):
    """omics/configs/stage3.yaml as shipped (full fine-tuning, 8-bit AdamW stepped inside backward) through the
    Trainer: the weights move, the step's gradient norm is logged, the model is saved whole."""
    pytest.importorskip("torchao")
    from safetensors.torch import load_file

    data = tmp_path / "r.jsonl"
    data.write_text("\n".join(head("stage3_train.jsonl", 12)) + "\n")
    out = tmp_path / "model"
    code = cli(monkeypatch, tmp_path, "stage3", "train", "--data", str(data), "--base-model", str(tiny_model),
               "--output-dir", str(out), "--metrics-dir", str(tmp_path / "metrics"),
               "--set=max_length=256", "--set=micro_batch_size=4", "--set=max_steps=2", "--set=save_steps=2",
               "--set=logging_steps=1", "--set=learning_rate=1e-3", "--set=gradient_checkpointing=false")
    assert code == 0
    before, after = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    name = "model.layers.0.mlp.down_proj.weight"
    assert not (before[name] == after[name]).all()  # trained in full
    unchanged = (before["model.embed_tokens.weight"] == after["model.embed_tokens.weight"]).all(dim=1)
    # frozen, but for the chat-token rows repaired once (this base model never spoke the chat format)
    assert unchanged.sum() == len(unchanged) - 3 and not unchanged[[128006, 128007, 128009]].any()
    summary = json.loads((tmp_path / "metrics" / "run_summary.json").read_text())
    norms = [h["grad_norm"] for h in summary["log_history"] if "grad_norm" in h]
    assert norms and all(n > 0 for n in norms)
    parameters = json.loads((tmp_path / "metrics" / "parameters.json").read_text())
    assert parameters["config"]["optimizer"] == "adamw_8bit" and parameters["config"]["optimizer_in_backward"]


def test_resume_after_a_kill_gives_the_same_model(tmp_path, tiny_model, monkeypatch):
    """Killed right after checkpoint-2, resumed: identical weights to an uninterrupted run (optimizer states,
    scheduler and data position all restored), on the shipped full fine-tuning path."""
    pytest.importorskip("torchao")
    from safetensors.torch import load_file
    from transformers import Trainer

    data = tmp_path / "r.jsonl"
    data.write_text("\n".join(head("stage3_train.jsonl", 24)) + "\n")
    settings = ["--set=max_length=256", "--set=micro_batch_size=2", "--set=max_steps=4", "--set=save_steps=2",
                "--set=learning_rate=1e-3", "--set=gradient_checkpointing=false", "--set=warmup_ratio=0"]

    def run(name: str, *flags: str) -> int:
        return cli(monkeypatch, tmp_path, "stage3", "train", "--data", str(data), "--base-model", str(tiny_model),
                   "--output-dir", str(tmp_path / name), "--metrics-dir", str(tmp_path / f"{name}-metrics"),
                   *settings, *flags)

    assert run("straight") == 0
    save = Trainer._save_checkpoint

    def save_then_die(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise KeyboardInterrupt  # the run is killed right after its first checkpoint

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            run("killed")
    assert run("killed", "--resume") == 0
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(tmp_path / "killed" / "model.safetensors")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_compare_defaults_to_the_evaluated_stages(tmp_path, monkeypatch, caplog):
    root = tmp_path / "metrics"
    for stage, score in ((2, 40.0), (3, 45.5)):
        (root / f"stage{stage}").mkdir(parents=True)
        (root / f"stage{stage}" / "metrics.json").write_text(json.dumps({
            "meta": {"data_sha256": "x"}, "overall": {"mixed_score_mean": score},
            "tasks": {"emp-a": {"mixed_score": score, "paper_metric": {"name": "MCC", "value": score}}}}))
    assert cli(monkeypatch, tmp_path, "compare", "--metrics-root", str(root)) == 0
    assert "+5.50" in (root / "comparison.md").read_text()
    (root / "stage3" / "metrics.json").unlink()
    assert cli(monkeypatch, tmp_path, "compare", "--metrics-root", str(root)) == 2
    assert "fewer than two evaluated stages" in caplog.text


def test_reasoning_examples_are_asked_with_the_reasoning_prompt_and_replay_with_stage2s(tiny_model, tmp_path):
    tokenizer = load_tokenizer(tiny_model, chat=True)
    config = TrainConfig(max_length=1024, reasoning_system_prompt="Reason first, then answer in <answer> tags.")
    (tmp_path / "reasoning.jsonl").write_text("\n".join(head("stage3_train.jsonl", 3)) + "\n", encoding="utf-8")
    (tmp_path / "replay.jsonl").write_text("\n".join(head("stage2_train.jsonl", 3)) + "\n", encoding="utf-8")
    records = reasoning_records(tmp_path / "reasoning.jsonl", DataReport("r"), config)
    replay = [json.loads(line) for line in head("stage2_train.jsonl", 3)]
    examples = list(chat_examples(tmp_path / "r.jsonl", tokenizer, config, DataReport("r"), {},
                                  records=[*records, *replay]))
    for record, (ids, labels), system in zip([*records, *replay], examples,
                                             [config.reasoning_system_prompt] * 3 + [config.system_prompt] * 3,
                                             strict=True):
        prompt = [token for token, label in zip(ids, labels, strict=True) if label == IGNORE]
        assert prompt == PromptEncoder(tokenizer, system)([record["input"]])[0]


def test_evaluation_asks_each_mode_with_its_training_prompt(run):
    reasoning = read_json(run.metrics / "predictions.settings.json")
    direct = read_json(run.metrics / "direct" / "predictions.settings.json")
    config = read_json(run.metrics / "parameters.json")["config"]
    assert (reasoning["system_prompt"], direct["system_prompt"]) == (REASONING_PROMPT, SYSTEM_PROMPT)
    assert (config["reasoning_system_prompt"], config["system_prompt"]) == (REASONING_PROMPT, SYSTEM_PROMPT)
    assert (reasoning["mode"], direct["mode"]) == ("reasoning", "direct")
    rows = [json.loads(line) for line in (run.metrics / "direct" / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(r["format_ok"] is None for r in rows)  # the whole answer parsed, as in Stage 2
    doc = read_json(run.metrics / "direct" / "metrics.json")
    assert all("format_compliance" not in result for result in doc["tasks"].values())
    modes = (run.metrics / "modes.md").read_text()
    assert "| task | reasoning | direct | Δ direct-reasoning |" in modes
    reasoned = read_json(run.metrics / "metrics.json")["tasks"]
    for task, result in doc["tasks"].items():
        score = reasoned[task]["mixed_score"]
        assert f"| {task} | {score:.2f} | {result['mixed_score']:.2f} | {result['mixed_score'] - score:+.2f} |" in modes


def test_direct_mode_predictions_rescore_as_direct(run, monkeypatch):
    argv = ["score", "--predictions", "metrics/stage3/direct/predictions.jsonl", "--out", "rescored-direct"]
    assert cli(monkeypatch, run.root, *argv) == 0
    original = read_json(run.metrics / "direct" / "metrics.json")
    rescored = read_json(run.root / "rescored-direct/metrics.json")
    assert {t: r["mixed_score"] for t, r in rescored["tasks"].items()} == {
        t: r["mixed_score"] for t, r in original["tasks"].items()}
