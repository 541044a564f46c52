"""`omics stage2 train → evaluate → score`, in-process on the tiny model: every artifact, refusals, bad lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import cli, head

from omics.data.packing import file_sha256
from omics.device import has_package, use_cuda
from omics.model import CHAT_TEMPLATE

SAMPLES = Path(__file__).resolve().parent.parent / "omics" / "samples"
EOT, EOS, PAD = 128009, 128001, 128004
FAST = [f"--set={item}" for item in (
    "max_length=256", "micro_batch_size=4", "grad_accum=1", "max_steps=3", "save_steps=3", "logging_steps=1",
    "lora_r=4", "lora_alpha=8", "gradient_checkpointing=false")]
EVAL_FAST = ["--max-new-tokens", "8", "--max-samples", "2"]
BAD_JSON_LINE, MISSING_FIELD_LINE = 5, 12
PREDICTION_FIELDS = {"task", "input", "label", "prediction", "generated", "valid", "format_ok"}




def train_lines() -> list[str]:
    """40 sample lines with an invalid JSON line and a line missing its label at known line numbers."""
    lines = head("stage2_train.jsonl", 40)
    missing = json.loads(lines[0])
    del missing["label"]
    lines.insert(BAD_JSON_LINE - 1, '{"input": "ACGT", "output": "yes", "label": tru')
    lines.insert(MISSING_FIELD_LINE - 1, json.dumps(missing))
    return lines


def train_args(tiny_model: Path, data: str, out: str, metrics: str, *extra: str) -> list[str]:
    return ["stage2", "train", "--data", data, "--base-model", str(tiny_model), "--output-dir", out,
            "--metrics-dir", metrics, *FAST, *extra]


def eval_args(model: str, metrics: str, *extra: str, data: str = "test.jsonl") -> list[str]:
    return ["stage2", "evaluate", "--data", data, "--model", model, "--metrics-dir", metrics, *EVAL_FAST, *extra]


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    """One 3-step Stage 2 run (on a file with two bad lines), its evaluation, and a re-scoring."""
    root = tmp_path_factory.mktemp("stage2-run")
    (root / "train.jsonl").write_text("\n".join(train_lines()) + "\n", encoding="utf-8")
    (root / "test.jsonl").write_text("\n".join(head("stage2_test.jsonl", 40)) + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        codes = {
            "train": cli(mp, root, *train_args(tiny_model, "train.jsonl", "models/stage2", "metrics/stage2")),
            "evaluate": cli(mp, root, *eval_args("models/stage2", "metrics/stage2")),
            "score": cli(mp, root, "score", "--predictions", "metrics/stage2/predictions.jsonl", "--out", "rescored"),
        }
    return SimpleNamespace(root=root, codes=codes, model=root / "models/stage2", metrics=root / "metrics/stage2",
                           rescored=root / "rescored")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def scalar_tags(events: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])


def test_commands_succeed(run):
    assert run.codes == {"train": 0, "evaluate": 0, "score": 0}


# ------------------------------------------------------------------------------------------------ train


def test_model_dir(run):
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        assert (run.model / name).is_file(), name
    assert list((run.model / "checkpoints").glob("checkpoint-3"))
    assert not (run.model / ".staging").exists()


def test_saved_tokenizer_carries_the_chat_template(run, tiny_model):
    from transformers import AutoTokenizer

    jinja = run.model / "chat_template.jinja"
    config = read_json(run.model / "tokenizer_config.json")
    saved = jinja.read_text() if jinja.is_file() else config.get("chat_template")
    assert saved == CHAT_TEMPLATE
    # any tool loading the saved model sees the training prompt tokens
    tokenizer = AutoTokenizer.from_pretrained(run.model)
    messages = [{"role": "user", "content": "Is <dna>ACGT<dna> GC-rich?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
    assert ids[0] == 128000 and ids.count(128000) == 1
    assert tokenizer.decode(ids).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert tokenizer.pad_token_id not in (EOT, EOS)


def test_generation_config_stops_at_end_of_turn(run):
    config = read_json(run.model / "generation_config.json")
    eos = config["eos_token_id"]
    eos = eos if isinstance(eos, list) else [eos]
    assert EOT in eos
    assert config.get("pad_token_id") not in eos


def test_parameters_json(run):
    params = read_json(run.metrics / "parameters.json")
    assert params["stage"] == 2
    config = params["config"]
    assert (config["max_steps"], config["lora_r"], config["lora_alpha"], config["max_length"]) == (3, 4, 8, 256)
    assert config["gradient_checkpointing"] is False
    assert params["data"]["sha256"] == file_sha256(run.root / "train.jsonl")
    assert Path(params["base_model"]).name == Path(params["base_model"]).resolve().name
    assert 0 < params["parameters"]["trainable"] < params["parameters"]["total"]
    assert set(params["repaired_embedding_rows"]) == {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}


def test_data_report_lists_bad_lines_and_task_summary(run):
    data = read_json(run.metrics / "data_report.json")
    report = data["report"]
    assert report["lines"] == 42 and report["skipped"] == 2
    assert sorted(n for lines in report["first_skipped_lines"].values() for n in lines) == [
        BAD_JSON_LINE, MISSING_FIELD_LINE]
    reasons = " ".join(report["skipped_by_reason"])
    assert "JSON" in reasons and "label" in reasons
    tasks = {json.loads(line)["task"] for line in head("stage2_train.jsonl", 40)}
    assert set(data["task_summary"]) == tasks
    assert sum(s["n"] for s in data["task_summary"].values()) == 40


def test_run_summary_and_tensorboard(run):
    summary = read_json(run.metrics / "run_summary.json")
    assert summary["stage"] == 2 and summary["steps"] == 3
    assert summary["tokens_seen"] > 0
    events = sorted((run.metrics / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    tags = set().union(*(scalar_tags(e) for e in events))
    assert "train/loss" in tags


def test_run_summary_merge_losses_are_those_of_the_saved_models(run, tiny_model):
    """The recorded adapter and merged losses are the saved adapter's and the saved model's on the first
    training blocks; merging in fp32 is exact, so the gap is zero up to float noise."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from omics.config import TrainConfig
    from omics.data.packing import PackedCollator
    from omics.loss import MergeCheck
    from omics.model import load_tokenizer
    from omics.paths import cache_dir
    from omics.stage2.train import STAGE
    from omics.train import build_dataset

    merge = read_json(run.metrics / "run_summary.json")["merge"]
    tokenizer = load_tokenizer(run.model, chat=True)
    config = TrainConfig(**read_json(run.metrics / "parameters.json")["config"])
    blocks = build_dataset(STAGE, run.root / "train.jsonl", tokenizer, config, {}, cache_dir(run.model))[0]
    check = MergeCheck.first_blocks(blocks, PackedCollator(tokenizer.pad_token_id))
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), run.model / "adapter")
    assert merge["batches"] == min(4, len(blocks))
    assert check(adapter) == pytest.approx(merge["adapter_loss"], abs=1e-5)
    assert check(AutoModelForCausalLM.from_pretrained(run.model)) == pytest.approx(merge["merged_loss"], abs=1e-5)
    assert abs(merge["gap"]) < 1e-4


# --------------------------------------------------------------------------------------------- evaluate


def test_predictions_file(run):
    rows = read_jsonl(run.metrics / "predictions.jsonl")
    tasks = {json.loads(line)["task"] for line in head("stage2_test.jsonl", 40)}
    assert len(rows) == 2 * len(tasks)  # --max-samples 2 per task
    assert {r["task"] for r in rows} == tasks
    for row in rows:
        assert set(row) >= PREDICTION_FIELDS
        assert row["format_ok"] is None  # Stage 2 has no format rule
        assert isinstance(row["generated"], str)
        assert row["valid"] == (row["prediction"] is not None)
    test = [json.loads(line) for line in head("stage2_test.jsonl", 40)]
    assert all({"input": r["input"], "label": r["label"], "task": r["task"]} in
               [{"input": t["input"], "label": t["label"], "task": t["task"]} for t in test] for r in rows)


def test_metrics_json_and_markdown(run):
    doc = read_json(run.metrics / "metrics.json")
    tasks = {json.loads(line)["task"] for line in head("stage2_test.jsonl", 40)}
    assert set(doc["tasks"]) == tasks
    for result in doc["tasks"].values():
        assert result["n"] == 2
        assert 0 <= result["mixed_score"] <= 100
        assert 0 <= result["valid_rate"] <= 1
        assert "type" in result and "paper_metric" in result
    means = [r["mixed_score"] for r in doc["tasks"].values()]
    assert doc["overall"]["mixed_score_mean"] == pytest.approx(sum(means) / len(means), abs=0.01)
    assert doc["meta"]["data_sha256"] == file_sha256(run.root / "test.jsonl")
    assert doc["meta"]["n_examples"] == 2 * len(tasks)
    markdown = (run.metrics / "metrics.md").read_text(encoding="utf-8")
    assert all(task in markdown for task in tasks)


def test_evaluation_tfevents(run):
    events = [e for e in (run.metrics / "tensorboard").rglob("events.out.tfevents.*") if e.name.endswith("stage2")]
    assert len(events) == 1
    tags = scalar_tags(events[0])
    for task in read_json(run.metrics / "metrics.json")["tasks"]:
        assert f"eval/{task}/mixed_score" in tags
    assert "eval/overall/mixed_score_mean" in tags


def test_score_reproduces_the_evaluation(run):
    original, rescored = read_json(run.metrics / "metrics.json"), read_json(run.rescored / "metrics.json")
    assert set(rescored["tasks"]) == set(original["tasks"])
    for task, result in original["tasks"].items():
        assert rescored["tasks"][task]["mixed_score"] == result["mixed_score"]
        assert rescored["tasks"][task] == result
    assert rescored["overall"] == original["overall"]
    assert read_jsonl(run.rescored / "predictions.jsonl") == read_jsonl(run.metrics / "predictions.jsonl")
    assert (run.rescored / "metrics.md").is_file()


def test_score_of_gold_answers(run, monkeypatch):
    """The stored predictions with the reference answers as generated text: every one valid, scores > 0."""
    gold = {json.loads(line)["input"]: json.loads(line)["output"] for line in head("stage2_test.jsonl", 40)}
    rows = read_jsonl(run.metrics / "predictions.jsonl")
    for row in rows:
        row["generated"] = gold[row["input"]]
        row.pop("probability", None)  # the model's probability belongs to its own text: hard scores here
    (run.root / "gold").mkdir()
    (run.root / "gold/predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["score", "--predictions", "gold/predictions.jsonl", "--train-data", "train.jsonl", "--out", "gold/scored"]
    assert cli(monkeypatch, run.root, *argv) == 0
    doc = read_json(run.root / "gold/scored/metrics.json")
    assert {task: r["valid_rate"] for task, r in doc["tasks"].items()} == dict.fromkeys(doc["tasks"], 1.0)
    assert all(r["mixed_score"] > 0 for r in doc["tasks"].values())
    assert all(r["valid"] for r in read_jsonl(run.root / "gold/scored/predictions.jsonl"))


# ---------------------------------------------------------------------------------------------- refusals


def test_second_evaluate_without_overwrite_is_refused(run, monkeypatch):
    before = {p.name: p.read_bytes() for p in (run.metrics / "metrics.json", run.metrics / "predictions.jsonl")}
    assert cli(monkeypatch, run.root, *eval_args("models/stage2", "metrics/stage2")) == 2
    assert {p: (run.metrics / p).read_bytes() for p in before} == before


def test_second_train_without_overwrite_is_refused(run, tiny_model, monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="omics")
    args = train_args(tiny_model, "train.jsonl", "models/stage2", "metrics/stage2")
    assert cli(monkeypatch, run.root, *args) == 2
    assert "--overwrite" in caplog.text
    assert (run.model / "model.safetensors").is_file()


def test_score_refuses_to_replace_without_overwrite(run, monkeypatch):
    argv = ["score", "--predictions", "metrics/stage2/predictions.jsonl", "--out", "rescored"]
    assert cli(monkeypatch, run.root, *argv) == 2


def test_evaluate_missing_model_dir(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="omics")
    (tmp_path / "test.jsonl").write_text("\n".join(head("stage2_test.jsonl", 5)) + "\n")
    assert cli(monkeypatch, tmp_path, *eval_args("no/such/model", "metrics/stage2")) == 2
    assert "no/such/model" in caplog.text
    assert not (tmp_path / "metrics/stage2/metrics.json").exists()


@pytest.mark.skipif(has_package("vllm") and use_cuda(), reason="vLLM and a GPU are present")
def test_evaluate_backend_vllm_without_vllm(run, monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="omics")
    argv = eval_args("models/stage2", "metrics/vllm", "--backend", "vllm")
    assert cli(monkeypatch, run.root, *argv) == 2
    assert "vllm" in caplog.text.lower()


def test_bad_line_stop_names_file_and_line(tiny_model, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="omics")
    (tmp_path / "train.jsonl").write_text("\n".join(train_lines()) + "\n", encoding="utf-8")
    argv = train_args(tiny_model, "train.jsonl", "models/stage2", "metrics/stage2", "--set", "on_bad_line=stop")
    assert cli(monkeypatch, tmp_path, *argv) == 2
    assert f"train.jsonl:{BAD_JSON_LINE}:" in caplog.text
    assert not (tmp_path / "models/stage2/config.json").exists()
