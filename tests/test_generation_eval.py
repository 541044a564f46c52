"""Periodic generation metrics during training: answers to an eval sample, scored and logged to TensorBoard."""

from __future__ import annotations

from types import SimpleNamespace

from helpers import head
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
    callback.on_evaluate(None, SimpleNamespace(global_step=7), None, model=model)
    assert model.training  # handed back in the mode it was in
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = events.Tags()["scalars"]
    assert "eval_generation/mixed_score_mean" in tags
    assert any(t.endswith("/valid_rate") for t in tags)
    assert events.Scalars("eval_generation/mixed_score_mean")[0].step == 7
