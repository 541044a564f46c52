"""The benchmarks run on CPU with the tiny shape (so they never rot) and write their JSON."""

from __future__ import annotations

import json

import pytest

from omics.bench.train import model_flops_per_token, synthetic_examples
from omics.cli import main


def test_train_benchmark_measures_baseline_and_ours(tmp_path, capsys):
    """Ours is what `omics stage2 train` runs: configs/stage2.yaml through OmicsTrainer (its own log lines)."""
    out = tmp_path / "train.json"
    assert main(["bench", "train", "--shape", "tiny", "--stages", "2", "--steps", "1", "--examples", "24",
                 "--max-length", "512", "--micro-batch-size", "2", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    baseline, ours = doc["results"]
    assert "'train_runtime'" in capsys.readouterr().out  # the HF Trainer's summary of our path's run
    assert (baseline["driver"], ours["driver"]) == ("hand-written loop", "omics.train.OmicsTrainer")
    assert (ours["finetune"], ours["checkpoint_every_n_layers"]) == ("lora", 1)  # the shipped Stage 2 config
    assert baseline["padding_fraction"] > ours["padding_fraction"]  # packing removes the padding
    assert ours["speedup_vs_baseline"] == round(ours["tokens_per_second"] / baseline["tokens_per_second"], 2)
    assert doc["matmul_peak_tflops"] > 0 and "torch" in doc["versions"]


def test_eval_benchmark_compares_naive_and_fast(tmp_path):
    out = tmp_path / "eval.json"
    assert main(["bench", "eval", "--shape", "tiny", "--prompts", "4", "--answer-tokens", "4",
                 "--out", str(out)]) == 0
    row = json.loads(out.read_text())["results"][0]
    assert row["hf_fast_vs_naive"] > 0 and row["hf_naive"]["seconds"] > 0


def test_synthetic_lengths_and_flops_accounting():
    stage2 = synthetic_examples(2, 200, 1024)
    assert all(len(ids) <= 1024 and ids[0] == 128000 for ids, _ in stage2)
    assert all(labels[0] == -100 and labels[-1] != -100 for _, labels in stage2)  # prompt masked, answer not

    class Llama8B:
        num_hidden_layers, hidden_size, intermediate_size, vocab_size = 32, 4096, 14336, 128256
        num_attention_heads, num_key_value_heads, head_dim = 32, 8, 128

    # 6.98B body params: full fine-tuning 6N, LoRA 4N, plus the frozen head's 4·V·h on every position
    full = model_flops_per_token(Llama8B, "full", 0, 1.0)
    lora = model_flops_per_token(Llama8B, "lora", 0, 1.0)
    head = 4 * 128256 * 4096
    assert (full - head) / 6 == (lora - head) / 4 == 6_979_321_856


def test_stage_paths_train_save_merge_and_reload(tmp_path):
    """Each stage's shipped config (Stage 3: full fine-tuning, 8-bit AdamW in backward) trains one step, saves
    with LoRA merged, and reloads to the same loss."""
    out = tmp_path / "paths.json"
    assert main(["bench", "train", "--shape", "tiny", "--stage-paths", "--stages", "2", "3", "--max-length", "64",
                 "--micro-batch-size", "1", "--out", str(out)]) == 0
    stage2, stage3 = json.loads(out.read_text())["results"]
    assert (stage2["finetune"], stage3["finetune"], stage3["optimizer"]) == ("lora", "full", "adamw_8bit in backward")
    for row in (stage2, stage3):
        assert row["loss_after_step"] != row["loss_first_step"]  # the step changed the weights
        assert abs(row["merged_minus_trained"]) < 1e-4 and row["saved_gib"] > 0


@pytest.mark.slow
def test_8b_widths_one_layer_every_stage_path(tmp_path):
    """The real Llama-3.1-8B widths (one layer) through every stage's path on CPU, fp32."""
    out = tmp_path / "paths-8b.json"
    assert main(["bench", "train", "--shape", "8b", "--layers", "1", "--stage-paths", "--max-length", "32",
                 "--micro-batch-size", "1", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["widths"] == {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
                             "num_key_value_heads": 8, "vocab_size": 128256}
    assert [row["stage"] for row in doc["results"]] == [1, 2, 3]
    for row in doc["results"]:
        assert row["loss_after_step"] != row["loss_first_step"]
        assert abs(row["merged_minus_trained"]) < 1e-4 and row["saved_gib"] > 4  # 2 x 2.1 GB fp32 embeddings
