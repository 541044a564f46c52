"""DPO (`omics dpo train|evaluate`) and `omics pairs` on the tiny Llama: pairs validated by line, the reward margin
rising, exact resume after SIGKILL, no overwrite, the saved model evaluated, sampled pairs scored by the label."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from helpers import cli
from kill import run_in_child, run_killed
from safetensors.torch import load_file

from omics.data.pairs import conversation, read_pairs
from omics.data.validate import DataError, DataReport
from omics.model_card import ModelCard
from omics.stages import ANSWER_TAGS, stage

STEPS = 4  # checkpoints at steps 2 and 4
SETTINGS = [f"--set={item}" for item in (
    "max_length=128", "micro_batch_size=4", "grad_accum=1", f"max_steps={STEPS}", "save_steps=2", "logging_steps=1",
    "lora_r=4", "lora_alpha=8", "gradient_checkpointing=false", "warmup_ratio=0", "learning_rate=2e-2")]
QUESTIONS = [f"GC-rich? <dna>{seq}<dna>" for seq in ("GGCC", "GCGC", "CCGG", "GCCG")]
# conversations with a short system turn of their own: on CPU, TRL scores every position against the 128k
# vocabulary, so a DPO step costs what its sequences' length does
PAIRS = [{"prompt": [{"role": "system", "content": "Answer yes or no."}, {"role": "user", "content": question}],
          "chosen": [{"role": "assistant", "content": "yes"}], "rejected": [{"role": "assistant", "content": "no"}]}
         for question in QUESTIONS]
SAME_WEIGHTS = 1e-6  # up to float summation order across processes (tests/test_resume.py); a step moves ~2e-2


def write_pairs(path: Path, pairs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    return path


def test_every_bad_line_is_named(tmp_path):
    good = {"prompt": "Is it soluble?", "chosen": "yes", "rejected": "no"}
    chat = {"prompt": [{"role": "user", "content": "Is it soluble?"}], "chosen": [{"role": "assistant",
            "content": "yes"}], "rejected": [{"role": "assistant", "content": "no"}]}
    lines = [json.dumps(good), "{not json", json.dumps({"prompt": "q", "chosen": "a"}),
             json.dumps({**good, "chosen": " "}), json.dumps({**good, "rejected": 3}),
             json.dumps({**good, "rejected": "yes "}), json.dumps(chat),
             json.dumps({**chat, "chosen": [{"role": "user", "content": "yes"}]}), json.dumps([good])]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = DataReport(str(path))
    kept = list(read_pairs(path, report))
    assert [p["line"] for p in kept] == [1, 7]
    assert report.examples == {
        "invalid JSON (Expecting property name enclosed in double quotes)": [2],
        "missing field(s) rejected": [3],
        "field 'chosen' is an empty string": [4],
        "'chosen' and 'rejected' must have the same form (both strings or both message lists)": [5],
        "'chosen' equals 'rejected': the pair prefers nothing": [6],
        "field 'chosen' message 1: an answer holds assistant messages only, got 'user'": [8],
        "line is not a JSON object": [9]}
    with pytest.raises(DataError, match=rf"{path}:2: invalid JSON"):
        list(read_pairs(path, DataReport(str(path)), on_bad_line="stop"))
    # a string prompt is asked under the model's system prompt; a conversation's own system turn is kept
    assert conversation(kept[0], "SYS") == {"prompt": [{"role": "system", "content": "SYS"}, {"role": "user",
                                            "content": "Is it soluble?"}], "chosen": [{"role": "assistant",
                                            "content": "yes"}], "rejected": [{"role": "assistant", "content": "no"}]}
    own = {**chat, "prompt": [{"role": "system", "content": "MINE"}, *chat["prompt"]]}
    assert conversation(own, "SYS")["prompt"][0]["content"] == "MINE"


def test_a_reasoning_model_is_evaluated_in_reasoning_mode():
    dpo = stage("dpo")
    assert dpo.evaluated_as(None).modes == ("direct",)
    assert dpo.evaluated_as(ModelCard()).modes == ("direct",)
    reasoning = dpo.evaluated_as(ModelCard(answer_tags=ANSWER_TAGS))
    assert (reasoning.modes, reasoning.max_new_tokens) == (("reasoning", "direct"), 512)
    assert stage("stage2").evaluated_as(ModelCard(answer_tags=ANSWER_TAGS)) is stage("stage2")


def dpo_argv(tiny_model: Path, name: str, *flags: str) -> list[str]:
    return ["--root", "archive", "dpo", "train", "--data", "pairs.jsonl", "--base-model", str(tiny_model),
            "--output-dir", f"{name}/model", "--metrics-dir", f"{name}/metrics", *SETTINGS, *flags]


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    """One uninterrupted run, and one killed at its second checkpoint then resumed, each in a fresh process."""
    root = tmp_path_factory.mktemp("dpo")
    write_pairs(root / "pairs.jsonl", PAIRS)
    assert run_in_child(root, dpo_argv(tiny_model, "straight")) == 0
    run_killed(root, dpo_argv(tiny_model, "killed"), "transformers.trainer:Trainer._save_checkpoint", nth=2)
    assert run_in_child(root, dpo_argv(tiny_model, "killed", "--resume")) == 0
    return root


def test_the_reward_margin_rises(runs):
    summary = json.loads((runs / "straight/metrics/run_summary.json").read_text())
    margins = [e["rewards/margins"] for e in summary["log_history"] if "rewards/margins" in e]
    assert len(margins) == STEPS and margins[0] == 0.0  # step 1: the policy is its reference (LoRA B = 0)
    assert all(later > earlier for earlier, later in zip(margins, margins[1:], strict=False))
    assert margins[-1] > 0.1 and summary["rewards"]["rewards/margins"] == {"first": 0.0, "last": margins[-1]}
    assert summary["rewards"]["rewards/accuracies"]["last"] == 1.0
    assert summary["rewards"]["loss"]["last"] < summary["rewards"]["loss"]["first"] == pytest.approx(math.log(2))
    events = list((runs / "straight/metrics/tensorboard").glob("events.out.tfevents.*"))
    assert events and b"rewards/margins" in events[0].read_bytes()


def test_killed_then_resumed_equals_uninterrupted(runs):
    assert json.loads((runs / "killed/metrics/run_summary.json").read_text())["steps"] == STEPS
    for name in ("model.safetensors", "adapter/adapter_model.safetensors"):
        straight, resumed = (load_file(runs / run / "model" / name) for run in ("straight", "killed"))
        assert straight.keys() == resumed.keys()
        for key, tensor in straight.items():
            torch.testing.assert_close(resumed[key], tensor, rtol=0, atol=SAME_WEIGHTS, msg=f"{name}: {key}")


def test_saved_model_describes_itself_and_evaluates(runs, tiny_model, monkeypatch, caplog):
    card = json.loads((runs / "straight/model/omics_model.json").read_text())
    assert card["stage"] == "dpo" and card["base_model"]["path"] == str(tiny_model.resolve())
    assert card["answer_tags"] is None and card["config"]["dpo_beta"] == 0.1
    caplog.set_level(logging.ERROR, logger="omics")
    assert cli(monkeypatch, runs, *dpo_argv(tiny_model, "straight")) == 2  # no overwrite of a finished run
    assert "a previous run exists" in caplog.text
    test = runs / "test.jsonl"
    test.write_text("".join(json.dumps({"input": question, "output": "The answer is yes.", "label": "yes",
                                        "task": "gc-toy"}) + "\n" for question in QUESTIONS[:2]))
    assert cli(monkeypatch, runs, "dpo", "evaluate", "--data", "test.jsonl", "--model", "straight/model",
               "--metrics-dir", "straight/eval", "--max-new-tokens", "4") == 0
    metrics = json.loads((runs / "straight/eval/metrics.json").read_text())
    assert metrics["meta"]["n_examples"] == 2 and "gc-toy" in metrics["tasks"]


def test_bf16_steps_run_on_cpu(tiny_model, tmp_path, monkeypatch):
    write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    assert cli(monkeypatch, tmp_path, *dpo_argv(tiny_model, "bf16", "--set=max_steps=2", "--set=dtype=bf16",
                                                "--set=keep_checkpoints=false")) == 0
    assert {t.dtype for t in load_file(tmp_path / "bf16/model/model.safetensors").values()} == {torch.bfloat16}
    summary = json.loads((tmp_path / "bf16/metrics/run_summary.json").read_text())
    assert summary["steps"] == 2 and not (tmp_path / "bf16/model/checkpoints").exists()


@pytest.fixture(scope="module")
def yes_no_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny Llama made to say " yes", " no" or stop, at random: every hidden state gets a large constant first
    component (embedding column 0), which only those three output rows read. Its answers then differ in score."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("yes-no")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] = 10.0
        head = model.get_output_embeddings().weight
        head[:, 0] = 0.0
        for token in (" yes", " no", "<|eot_id|>"):
            head[tokenizer.convert_tokens_to_ids(tokenizer.tokenize(token))[0], 0] = 2.0
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_pairs_from_sampled_answers(yes_no_model, tmp_path, monkeypatch, capsys):
    questions = [{"input": question, "output": f"The answer is {label}.", "label": label, "task": "gc-toy"}
                 for question, label in zip(QUESTIONS, ("yes", "no", "yes", "no"), strict=True)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    argv = ["pairs", "--model", str(yes_no_model), "--data", "train.jsonl", "--out", "pairs.jsonl", "--samples", "4",
            "--temperature", "1.0", "--max-new-tokens", "3"]
    assert cli(monkeypatch, tmp_path, *argv) == 0
    report = DataReport("pairs.jsonl")
    pairs = list(read_pairs(tmp_path / "pairs.jsonl", report))  # what omics dpo train reads: every line valid
    assert report.lines == len(pairs) > 0 and not report.skipped
    by_line = {i: q for i, q in enumerate(questions, 1)}
    written = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    for pair in written:
        assert pair["prompt"] == by_line[pair["line"]]["input"] and pair["task"] == "gc-toy"
        assert pair["chosen_score"] > pair["rejected_score"]
        assert pair["chosen_score"] == 1.0 and by_line[pair["line"]]["label"] in pair["chosen"]
    summary = json.loads((tmp_path / "pairs.report.json").read_text())
    assert summary["per_task"] == {"gc-toy": {"questions": 4, "pairs": len(pairs), "skipped": 4 - len(pairs)}}
    assert f"{len(pairs)} pairs from 4 questions" in capsys.readouterr().out
    assert cli(monkeypatch, tmp_path, *argv) == 2  # the pairs are not replaced without --overwrite
    assert cli(monkeypatch, tmp_path, *argv, "--overwrite") == 0
    assert [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()] == written  # seeded
