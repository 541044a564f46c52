"""The GPU's precision path on CPU: bf16 weights with fp32 trained copies, every stage through the shipped CLI.

On CPU `auto` is fp32, so without `--set dtype=bf16` no test would see a bf16 dtype mismatch. bf16 matmuls are
~30x slower than fp32 on these CPUs: two 64-token steps per stage, one-sample evaluations.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import cli, head
from safetensors import safe_open

from omics.config import load_config
from omics.loss import answer_only_loss
from omics.model import load_model, load_tokenizer, prepare_for_training
from omics.paths import default_config
from omics.train import check_precision

BF16 = [f"--set={item}" for item in (
    "dtype=bf16", "liger=false", "micro_batch_size=1", "grad_accum=1", "max_steps=2",
    "save_steps=2", "eval_steps=2", "logging_steps=1", "warmup_ratio=0", "eval_generation_samples=1")]
SHORT = {1: ["--set=max_length=64"], 2: ["--set=max_length=160"], 3: ["--set=max_length=160"]}  # 160: the prompt fits
EVAL = ["--dtype", "bf16", "--max-samples", "1", "--max-new-tokens", "4"]


def saved_dtypes(model_dir: Path) -> set[str]:
    with safe_open(model_dir / "model.safetensors", "pt") as weights:
        return {str(weights.get_slice(name).get_dtype()) for name in weights.keys()}  # noqa: SIM118


def test_stage2_config_step_in_bf16_with_trained_norms(tiny_model):
    """The crash of the first release: fp32 trained norms (LoRA) next to bf16 linears, liger off."""
    config = load_config(default_config(2), ["dtype=bf16", "liger=false", "gradient_checkpointing=false"])
    model = prepare_for_training(load_model(tiny_model, dtype="bf16"), load_tokenizer(tiny_model, chat=True), config)
    ids = torch.randint(1000, 5000, (1, 32))
    labels = ids.clone()
    labels[:, :16] = -100
    loss = answer_only_loss(model, {"input_ids": ids, "position_ids": torch.arange(32)[None], "labels": labels},
                            fused=False)
    loss.backward()
    norm = model.get_base_model().model.norm.modules_to_save["default"].weight
    assert norm.dtype == torch.float32 and norm.grad is not None and torch.isfinite(norm.grad).all()
    assert model.get_base_model().model.layers[0].mlp.up_proj.base_layer.weight.dtype == torch.bfloat16


@pytest.mark.parametrize(("overrides", "message"), [
    (["dtype=bf15"], "config key 'dtype' must be one of"),
    (["dtype=fp16", "finetune=full"], "dtype fp16"),
    (["dtype=fp16", "finetune=lora", "optimizer_in_backward=true", "grad_accum=1"], "dtype fp16"),
])
def test_unusable_dtype_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        check_precision(load_config(default_config(2), overrides))


@pytest.fixture(scope="module")
def stages(tiny_model, tmp_path_factory):
    """Stage 1 → 2 → 3 in bf16 (each from the previous one's saved model), each evaluated in bf16."""
    root = tmp_path_factory.mktemp("bf16")
    (root / "seqs.txt").write_text("\n".join(head("stage1_train.txt", 4)) + "\n")
    (root / "heldout.txt").write_text("\n".join(head("stage1_heldout.txt", 2)) + "\n")
    (root / "train.jsonl").write_text("\n".join(head("stage2_train.jsonl", 8)) + "\n")
    (root / "test.jsonl").write_text("\n".join(head("stage2_test.jsonl", 4)) + "\n")
    (root / "reasoning.jsonl").write_text("\n".join(head("stage3_train.jsonl", 4)) + "\n")
    where = {n: ["--output-dir", f"models/stage{n}", "--metrics-dir", f"metrics/stage{n}"] for n in (1, 2, 3)}
    codes = {}
    with pytest.MonkeyPatch.context() as mp:
        codes["train1"] = cli(mp, root, "stage1", "train", "--data", "seqs.txt", "--base-model", str(tiny_model),
                              *where[1], *BF16, *SHORT[1])
        codes["evaluate1"] = cli(mp, root, "stage1", "evaluate", "--data", "heldout.txt", "--model", "models/stage1",
                                 "--metrics-dir", "metrics/stage1", "--dtype", "bf16")
        # the eval file: the eval loss (prediction_step → compute_loss) and the generation check run in bf16 too
        codes["train2"] = cli(mp, root, "stage2", "train", "--data", "train.jsonl", "--eval-data", "test.jsonl",
                              "--base-model", "models/stage1", *where[2], *BF16, *SHORT[2])
        codes["evaluate2"] = cli(mp, root, "stage2", "evaluate", "--data", "test.jsonl", "--model", "models/stage2",
                                 "--metrics-dir", "metrics/stage2", *EVAL)
        # omics/configs/stage3.yaml as shipped: full fine-tuning of bf16 weights, torchao 8-bit AdamW in backward
        codes["train3"] = cli(mp, root, "stage3", "train", "--data", "reasoning.jsonl", "--replay-data",
                              "train.jsonl", "--base-model", "models/stage2", *where[3], *BF16, *SHORT[3])
        codes["evaluate3"] = cli(mp, root, "stage3", "evaluate", "--data", "test.jsonl", "--model", "models/stage3",
                                 "--metrics-dir", "metrics/stage3", *EVAL)
    return SimpleNamespace(root=root, codes=codes)


def test_every_stage_trains_saves_reloads_and_evaluates_in_bf16(stages):
    assert stages.codes == dict.fromkeys(stages.codes, 0)
    for stage in (1, 2, 3):
        summary = json.loads((stages.root / f"metrics/stage{stage}/run_summary.json").read_text())
        losses = [e["loss"] for e in summary["log_history"] if "loss" in e]
        assert summary["steps"] == 2 and len(losses) == 2 and all(0 < x < 20 for x in losses), stage
    evaluated = json.loads((stages.root / "metrics/stage2/metrics.json").read_text())
    assert evaluated["meta"]["n_examples"] >= 1
    history = json.loads((stages.root / "metrics/stage2/run_summary.json").read_text())["log_history"]
    assert any("eval_loss" in e and 0 < e["eval_loss"] < 20 for e in history)
    likelihood = json.loads((stages.root / "metrics/stage1/likelihood.json").read_text())
    assert likelihood["meta"]["dtype"] == "bf16" and likelihood["results"]["trained"]["overall"]["tokens"] > 0


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_bf16_weights_are_saved_as_bf16(stages, stage):
    model_dir = stages.root / f"models/stage{stage}"
    assert json.loads((model_dir / "config.json").read_text())["dtype"] == "bfloat16"
    assert saved_dtypes(model_dir) == {"BF16"}
