"""`omics bench eval`: generation throughput of HF naive (batch 1, no sorting), our HF backend, and vLLM.

Same prompts (Stage-2-like question lengths) for every backend in one run, answers forced to a fixed
length (random weights would otherwise stop at arbitrary points), one Stage-2-like and one
Stage-3-like answer length. Examples/s and output tokens/s, ratios against HF naive, JSON with versions.
"""

from __future__ import annotations

import json
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from omics.bench.train import SHAPES, synthetic_examples
from omics.device import describe, has_package, model_dtype, use_cuda
from omics.evaluate.generate import HFBackend
from omics.model import load_tokenizer
from omics.tiny import save_llama3_tokenizer
from omics.train import versions


def naive_generate(backend: HFBackend, prompts: list[str]) -> None:
    """What a hand-rolled evaluation loop does: one prompt at a time, in file order."""
    device = next(backend.model.parameters()).device
    for prompt in prompts:
        ids = backend.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
        backend.model.generate(input_ids=ids, max_new_tokens=backend.max_new_tokens,
                               min_new_tokens=backend.min_new_tokens, do_sample=False,
                               pad_token_id=backend.tokenizer.pad_token_id)


def timed(fn, *args) -> float:
    if use_cuda():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(*args)
    if use_cuda():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(args: Namespace) -> dict:
    device = "cuda" if use_cuda() else "cpu"
    shape = SHAPES[args.shape]
    config = (AutoConfig.from_pretrained(shape) if isinstance(shape, Path)
              else AutoConfig.for_model("llama", vocab_size=128256, **shape))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=model_dtype(args.dtype), attn_implementation="sdpa")
    model = model.to(device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_llama3_tokenizer(Path(tmp))
        tokenizer = load_tokenizer(tmp, chat=True)
    prompts = [tokenizer.decode(ids) for ids, _ in synthetic_examples(2, args.prompts, 1024)]
    results = []
    for answer_tokens in args.answer_tokens:
        backend = HFBackend(model, tokenizer, answer_tokens, args.batch_tokens, min_new_tokens=answer_tokens)
        backend.generate(prompts[:2])  # warm-up
        row = {"answer_tokens": answer_tokens, "prompts": len(prompts)}
        for name, fn in (("hf_naive", naive_generate), ("hf_fast", lambda b, p: b.generate(p))):
            seconds = timed(fn, backend, prompts)
            row[name] = {"seconds": round(seconds, 3), "examples_per_second": round(len(prompts) / seconds, 3),
                         "output_tokens_per_second": round(len(prompts) * answer_tokens / seconds, 1)}
        row["hf_fast_vs_naive"] = round(row["hf_naive"]["seconds"] / row["hf_fast"]["seconds"], 2)
        row["vllm"] = "measured only with a saved model directory and vLLM installed" if has_package("vllm") else (
            "not installed")
        results.append(row)
        print(json.dumps(row), flush=True)
    doc = {"benchmark": "eval", "shape": args.shape, "device": describe(), "versions": versions(),
           "settings": vars(args) | {"out": str(args.out)}, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=str))
    print("| answer tokens | HF naive ex/s | HF fast ex/s | fast / naive |\n|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['answer_tokens']} | {r['hf_naive']['examples_per_second']:.2f} | "
              f"{r['hf_fast']['examples_per_second']:.2f} | {r['hf_fast_vs_naive']:.2f} |")
    return doc
