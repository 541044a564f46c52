"""Issue 19 item 8 figures at Llama-3.1-8B width (one 4096-wide layer, 128k vocabulary, bf16, CPU):

- trainable-token rows: PEFT's forward (the whole embedding/head rebuilt with the trained rows copied in) against
  ours (frozen weight + trained rows), for one Stage 2 answer-only loss step and one decoding step's embedding;
- the Stage 1 likelihood pass: KV-cache bytes a plain decoder forward builds, per token per layer.

    PYTHONPATH=. python benchmarks/leaks.py --out benchmarks/results/leaks.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from peft.tuners.trainable_tokens import TrainableTokensLayer
from transformers import LlamaConfig, LlamaForCausalLM

from omics.config import TrainConfig
from omics.device import mixed_precision
from omics.loss import _slice_loss, answer_only_loss
from omics.model import load_tokenizer, prepare_for_training
from omics.tiny import save_llama3_tokenizer

WIDTH = {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 512, "num_hidden_layers": 1,
         "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "tie_word_embeddings": False}


def token_rows(peft_path: bool, tokenizer) -> dict:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**WIDTH)).to(torch.bfloat16)
    model = prepare_for_training(model, tokenizer, TrainConfig(lora_r=4, train_chat_token_rows=True,
                                                               gradient_checkpointing=False))
    base = model.get_base_model()
    ids = torch.randint(1000, 100000, (1, 64))
    ids[0, 5] = 128009  # a trained row
    labels = ids.clone()
    labels[:, :48] = -100
    batch = {"input_ids": ids, "position_ids": torch.arange(64)[None], "labels": labels}

    def peft_loss():  # the previous loss: PEFT's embedding forward, the merged head weight for the projection
        with mixed_precision(base):
            hidden = base.model(input_ids=ids, position_ids=batch["position_ids"], use_cache=False).last_hidden_state
            targets = labels[:, 1:]
            keep = targets != -100
            return _slice_loss(base.lm_head.weight, hidden[:, :-1][keep], targets[keep]) / keep.sum()

    if peft_path:
        for layer in (m for m in model.modules() if isinstance(m, TrainableTokensLayer)):
            del layer.forward
    step = peft_loss if peft_path else (lambda: answer_only_loss(model, dict(batch), fused=False))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        loss = step()
        loss.backward()
        model.zero_grad()
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(10):
            model.get_input_embeddings()(ids[:, :1])
        embed = (time.perf_counter() - start) / 10
    matrix_gib = WIDTH["vocab_size"] * WIDTH["hidden_size"] * 2 / 2**30
    return {"path": "peft (merged matrix)" if peft_path else "ours (frozen weight + trained rows)",
            "loss": round(loss.item(), 6), "step_seconds_min_of_3": round(min(times), 3),
            "embedding_forward_ms_per_decoding_step": round(embed * 1000, 2),
            "whole_matrix_copies_per_step": 2 if peft_path else 0,
            "dense_matrix_gradients_per_step": 2 if peft_path else 0, "matrix_gib_bf16": round(matrix_gib, 3)}


def kv_cache_bytes_per_token() -> dict:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**WIDTH)).to(torch.bfloat16).eval()
    ids = torch.randint(1000, 100000, (1, 256))
    with torch.no_grad():
        plain = model.model(input_ids=ids).past_key_values
        ours = model.model(input_ids=ids, use_cache=False).past_key_values
    layer = plain.layers[0]
    per_token = (layer.keys.numel() + layer.values.numel()) * layer.keys.element_size() / ids.shape[1]
    return {"plain_forward_cache_bytes_per_token_per_layer": per_token,
            "llama_3_1_8b_gib_per_64k_token_batch": round(per_token * 32 * 65536 / 2**30, 2),
            "ours_cache": None if ours is None else "built"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/leaks.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        save_llama3_tokenizer(Path(tmp))
        tokenizer = load_tokenizer(tmp, chat=True)
    doc = {"benchmark": "leaks", "shape": WIDTH, "device": "cpu", "torch": torch.__version__,
           "trainable_token_rows": [token_rows(True, tokenizer), token_rows(False, tokenizer)],
           "likelihood_kv_cache": kv_cache_bytes_per_token()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
