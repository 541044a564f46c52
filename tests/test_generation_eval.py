"""Periodic generation metrics during training: answers to an eval sample, scored and logged to TensorBoard."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch
from helpers import cli, head
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM

from omics.config import SYSTEM_PROMPT
from omics.evaluate.run import GenerationEvalCallback
from omics.model import load_tokenizer


def test_generation_eval_logs_mixed_scores(tmp_path, tiny_model):
    eval_file = tmp_path / "val.jsonl"
    eval_file.write_text("\n".join(head("stage2_test.jsonl", 30)) + "\n")
    tokenizer = load_tokenizer(tiny_model, chat=True)
    callback = GenerationEvalCallback(eval_file, None, tokenizer, SYSTEM_PROMPT, samples=5, max_new_tokens=4,
                                      reasoning=False, log_dir=tmp_path / "tb")
    assert len(callback.records) == 5  # one per task: the sample spans every task of the file
    model = AutoModelForCausalLM.from_pretrained(tiny_model).train()
    state, metrics = SimpleNamespace(global_step=7, log_history=[]), {"eval_loss": 1.0}
    callback.on_evaluate(None, state, None, model=model, metrics=metrics)
    assert model.training  # handed back in the mode it was in
    assert metrics["eval_mixed_score"] == state.log_history[0]["eval_mixed_score"]  # what picks the best
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = events.Tags()["scalars"]
    assert "eval_generation/mixed_score_mean" in tags
    for curve in ("valid_rate", "paper_metric", "collapse", "mixed_score"):
        assert sum(t.endswith(f"/{curve}") for t in tags) == 5, curve  # one per task
    assert events.Scalars("eval_generation/mixed_score_mean")[0].step == 7


def test_training_keeps_the_best_validation_checkpoint(tmp_path, tiny_model, monkeypatch):
    (tmp_path / "train.jsonl").write_text("\n".join(head("stage2_train.jsonl", 40)) + "\n")
    (tmp_path / "valid.jsonl").write_text("\n".join(head("stage2_valid.jsonl", 20)) + "\n")
    settings = [f"--set={item}" for item in (
        "max_length=256", "micro_batch_size=4", "grad_accum=1", "max_steps=6", "save_steps=2", "eval_steps=2",
        "logging_steps=1", "lora_r=4", "lora_alpha=8", "gradient_checkpointing=false", "learning_rate=5e-2",
        "eval_generation_samples=5", "save_total_limit=1")]
    assert cli(monkeypatch, tmp_path, "stage2", "train", "--data", "train.jsonl", "--eval-data", "valid.jsonl",
               "--base-model", str(tiny_model), "--output-dir", "model", "--metrics-dir", "metrics", *settings) == 0
    summary = json.loads((tmp_path / "metrics/run_summary.json").read_text())
    scores = {e["step"]: e["eval_mixed_score"] for e in summary["log_history"] if "eval_mixed_score" in e}
    assert sorted(scores) == [2, 4, 6]
    best = max(scores, key=lambda step: (scores[step], -step))  # the first of equal bests, as HF keeps
    kept = summary["kept"]
    assert (kept["step"], kept["why"], kept["value"], kept["last_step"]) == (
        best, "best eval_mixed_score", scores[best], 6)
    saved = load_file(tmp_path / "model/adapter/adapter_model.safetensors")
    checkpoint = load_file(tmp_path / f"model/checkpoints/checkpoint-{best}/adapter_model.safetensors")
    assert saved.keys() == checkpoint.keys()
    for key in saved:
        torch.testing.assert_close(saved[key], checkpoint[key], rtol=0, atol=0)
    evaluate = ["stage2", "evaluate", "--data", "valid.jsonl", "--model", "model", "--metrics-dir", "eval"]
    assert cli(monkeypatch, tmp_path, *evaluate, "--max-new-tokens", "0") == 2  # refused before any file
    assert not (tmp_path / "eval" / "predictions.jsonl").exists()


def test_a_schedule_that_cannot_keep_the_best_is_refused_before_any_file(tmp_path, tiny_model, monkeypatch):
    (tmp_path / "train.jsonl").write_text("\n".join(head("stage2_train.jsonl", 8)) + "\n")
    assert cli(monkeypatch, tmp_path, "stage2", "train", "--data", "train.jsonl", "--eval-data", "train.jsonl",
               "--base-model", str(tiny_model), "--output-dir", "model", "--metrics-dir", "metrics",
               "--set=save_steps=2", "--set=eval_steps=3") == 2
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "model").exists()


def test_reasoning_validation_selects_by_the_strict_score():
    """Validation of a reasoning stage counts an answer outside <answer> tags as invalid when it picks the best
    checkpoint (evaluation's fallback reads the whole text): two right answers in the format and two right
    answers without it are 50% valid, not 100%."""
    from omics.evaluate.run import strict
    from omics.evaluate.scoring import _specs, parse_rows, score_rows

    records = [json.loads(line) for line in head("stage3_valid.jsonl", 100)]
    records = [r for r in records if r["task"] == "emp-gcrich"][:4]
    rows = [{"task": r["task"], "label": r["label"], "output": r["output"], "input": r["input"],
             "generated": r["output"] if i < 2 else r["output"].split("<answer>")[1].removesuffix("</answer>")}
            for i, r in enumerate(records)]
    specs = _specs(records, None)
    parse_rows(rows, specs, reasoning=True)
    lenient, strict_result = (score_rows(r, specs, True)[0]["emp-gcrich"] for r in (rows, strict(rows)))
    assert (lenient["valid_rate"], lenient["format_compliance"]) == (1.0, 50.0)
    assert (strict_result["valid_rate"], strict_result["format_compliance"]) == (0.5, 50.0)
    assert strict_result["mixed_score"] < lenient["mixed_score"]
