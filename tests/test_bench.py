"""The benchmarks run on CPU with the tiny shape (so they never rot) and write their JSON."""

from __future__ import annotations

import json

from omics.bench.train import model_flops_per_token, synthetic_examples
from omics.cli import main


def test_train_benchmark_measures_baseline_and_ours(tmp_path):
    out = tmp_path / "train.json"
    assert main(["bench", "train", "--shape", "tiny", "--stages", "2", "--steps", "1", "--examples", "24",
                 "--max-length", "128", "--micro-batch-size", "2", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    baseline, ours = doc["results"]
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
