"""omics_model.json: a trained model describes itself, so a copied folder evaluates, generates and scores as the
original; the saved chat template carries the run's own system prompt."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import cli, head

import omics
from omics.config import SYSTEM_PROMPT, TrainConfig
from omics.data.packing import file_sha256, model_fingerprint
from omics.model import chat_template, load_tokenizer
from omics.model_card import CARD

# quotes, a backslash, a newline, Jinja's own delimiters and a non-ASCII letter: all must survive the template
CUSTOM = "You are a \"careful\" biologist's aide.\nAnswer \\ briefly; never print {{ x }} or {% endif %} — é."
FAST = [f"--set={item}" for item in (
    "max_length=256", "micro_batch_size=4", "grad_accum=1", "max_steps=2", "save_steps=2", "logging_steps=1",
    "lora_r=4", "lora_alpha=8", "gradient_checkpointing=false")]
EVAL = ["--max-new-tokens", "4", "--max-samples", "2"]
QUESTION = "Is <dna>ACGTACGGTA<dna> a promoter?"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def evaluate(mp: pytest.MonkeyPatch, root: Path, model: str, metrics: str, *extra: str, data: str = "test.jsonl"):
    return cli(mp, root, "stage2", "evaluate", "--data", data, "--model", model, "--metrics-dir", metrics, *EVAL,
               *extra)


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """A 2-step Stage 2 run with a custom system prompt, evaluated into its own metrics folder, and its model
    folder copied elsewhere (no metrics folder beside it)."""
    root = tmp_path_factory.mktemp("card")
    (root / "train.jsonl").write_text("\n".join(head("stage2_train.jsonl", 40)) + "\n", encoding="utf-8")
    (root / "test.jsonl").write_text("\n".join(head("stage2_test.jsonl", 40)) + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        assert cli(mp, root, "stage2", "train", "--data", "train.jsonl", "--base-model", str(tiny_model),
                   "--output-dir", "models/stage2", "--metrics-dir", "metrics/stage2", *FAST,
                   f"--set=system_prompt={CUSTOM}") == 0
        assert evaluate(mp, root, "models/stage2", "metrics/stage2") == 0
    copied = root / "elsewhere" / "model"
    shutil.copytree(root / "models/stage2", copied, ignore=shutil.ignore_patterns("checkpoints", "adapter"))
    return SimpleNamespace(root=root, model=root / "models/stage2", metrics=root / "metrics/stage2", copied=copied)


def test_card_describes_the_model(trained, tiny_model):
    card = read_json(trained.model / CARD)
    data_report, parameters = read_json(trained.metrics / "data_report.json"), read_json(trained.metrics /
                                                                                            "parameters.json")
    assert card["format_version"] == 1 and card["stage"] == "stage2" and card["omics_version"] == omics.__version__
    assert card["base_model"] == {"path": str(tiny_model.resolve()), "fingerprint": model_fingerprint(tiny_model)}
    assert card["system_prompt"] == CUSTOM and card["answer_tags"] is None
    assert card["tasks"] == data_report["task_summary"] and len(card["tasks"]) > 1
    assert card["data"]["--data"]["sha256"] == file_sha256(trained.root / "train.jsonl")
    assert card["config"] == parameters["config"]
    assert read_json(trained.model / "checkpoints" / "checkpoint-2" / CARD) == card


def test_saved_template_reproduces_the_training_prompt(trained, tiny_model, tmp_path):
    """Plain transformers, no system message, gets the very token ids training put before the answer."""
    from transformers import AutoTokenizer

    from omics.data.instructions import chat_examples
    from omics.data.validate import DataReport

    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"input": QUESTION, "output": "Yes.", "label": 1, "task": "promoter"}) + "\n")
    config = TrainConfig(system_prompt=CUSTOM, max_length=256)
    training = load_tokenizer(tiny_model, chat=True, system_prompt=CUSTOM)
    [(ids, labels)] = list(chat_examples(data, training, config, DataReport(str(data)), {}))
    prompt = ids[:next(i for i, label in enumerate(labels) if label != -100)]
    saved = AutoTokenizer.from_pretrained(trained.model)
    rendered = saved.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                         tokenize=True)["input_ids"]
    assert rendered == prompt
    assert CUSTOM in saved.decode(rendered)


@pytest.mark.parametrize("system", [SYSTEM_PROMPT, CUSTOM, "it's", "a\\", "'", "\\'", "\r\n{{ '}}' }}", "\\n"])
def test_template_default_system_turn_is_the_prompt(tokenizer, system):
    """Without a system message the template renders exactly what training renders with it."""
    tokenizer.chat_template = chat_template(system)
    user = [{"role": "user", "content": QUESTION}]
    default = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    explicit = tokenizer.apply_chat_template([{"role": "system", "content": system}, *user],
                                             add_generation_prompt=True, tokenize=False)
    assert default == explicit
    assert default.startswith(f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system.strip()}"
                              "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n")


def test_default_prompt_renders_as_before(tokenizer):
    """The paper's prompt: the same text (hence tokens) as the template that hard-coded it."""
    tokenizer.chat_template = chat_template(SYSTEM_PROMPT)
    text = tokenizer.apply_chat_template([{"role": "user", "content": " Q "}], add_generation_prompt=True,
                                         tokenize=False)
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + SYSTEM_PROMPT +
                    "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_copied_model_evaluates_identically(trained, monkeypatch):
    assert evaluate(monkeypatch, trained.root, str(trained.copied), "other-metrics") == 0
    original, copy = read_json(trained.metrics / "metrics.json"), read_json(trained.root / "other-metrics/metrics.json")
    assert copy["tasks"] == original["tasks"] and copy["overall"] == original["overall"]
    assert copy["meta"]["task_specs"] == original["meta"]["task_specs"]
    assert copy["meta"]["max_length"] == 256  # training's, from the card
    settings = read_json(trained.root / "other-metrics/predictions.settings.json")
    assert settings["system_prompt"] == CUSTOM


def test_train_data_overrides_the_card(trained, monkeypatch):
    shutil.copy(trained.root / "test.jsonl", trained.root / "as-train.jsonl")
    assert evaluate(monkeypatch, trained.root, str(trained.copied), "override", "--train-data", "as-train.jsonl") == 0
    specs = read_json(trained.root / "override/metrics.json")["meta"]["task_specs"]
    assert specs != read_json(trained.metrics / "metrics.json")["meta"]["task_specs"]


def test_folder_without_card_uses_defaults(trained, tmp_path, monkeypatch, caplog):
    old = Path(shutil.copytree(trained.copied, tmp_path / "old-model"))
    (old / CARD).unlink()
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(head("stage2_test.jsonl", 2)) + "\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="omics"):
        assert evaluate(monkeypatch, trained.root, str(old), str(tmp_path / "m"), data=str(short)) == 0
    assert f"has no {CARD}" in caplog.text
    settings = read_json(tmp_path / "m/predictions.settings.json")
    assert settings["system_prompt"] == SYSTEM_PROMPT and settings["max_length"] is None
    assert load_tokenizer(old, chat=True).chat_template == chat_template(SYSTEM_PROMPT)
    assert load_tokenizer(trained.copied, chat=True).chat_template == chat_template(CUSTOM)


def test_generate_reads_the_card(trained, monkeypatch):
    """Task specs and the system prompt come from the copied folder: rows of a known task get parsed."""
    rows = [json.loads(line) for line in head("stage2_test.jsonl", 2)]
    (trained.root / "q.jsonl").write_text("".join(json.dumps({"input": r["input"], "task": r["task"]}) + "\n"
                                                  for r in rows))
    assert cli(monkeypatch, trained.root, "generate", "--model", str(trained.copied), "--data", "q.jsonl",
               "--out", "a.jsonl", "--max-new-tokens", "4") == 0
    answers = [json.loads(line) for line in (trained.root / "a.jsonl").read_text().splitlines()]
    assert len(answers) == 2 and all("prediction" in row for row in answers)


def test_score_with_model_uses_its_task_summary(trained, monkeypatch):
    alone = trained.root / "alone"  # predictions without the training run's data_report.json beside them
    alone.mkdir()
    shutil.copy(trained.metrics / "predictions.jsonl", alone)
    assert cli(monkeypatch, trained.root, "score", "--predictions", "alone/predictions.jsonl", "--model",
               str(trained.copied), "--out", "by-model") == 0
    assert cli(monkeypatch, trained.root, "score", "--predictions", "alone/predictions.jsonl", "--out", "by-eval") == 0
    by_model = read_json(trained.root / "by-model/metrics.json")
    assert by_model["tasks"] == read_json(trained.metrics / "metrics.json")["tasks"]
    assert by_model["meta"]["task_specs"] != read_json(trained.root / "by-eval/metrics.json")["meta"]["task_specs"]
