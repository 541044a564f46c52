"""Generation backends behind one interface: greedy answers to chat prompts, stopping at end of turn.

`HFBackend` (always available): length-sorted dynamic batches under a token budget, left padding, KV cache,
early exit when every sequence has stopped. `VLLMBackend` when vLLM is installed and a GPU is present.
Both take the same prompt token ids, the ones training used (`omics.data.instructions.prompt_text`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from omics.device import has_package, use_cuda
from omics.model import end_of_turn_id, load_model, load_tokenizer

log = logging.getLogger("omics")


class Backend(Protocol):
    name: str

    def generate(self, prompts: list[str]) -> list[str]: ...


class HFBackend:
    name = "hf"

    def __init__(self, model, tokenizer, max_new_tokens: int, batch_tokens: int = 8192, min_new_tokens: int = 0):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.tokenizer.padding_side = "left"
        self.max_new_tokens, self.min_new_tokens = max_new_tokens, min_new_tokens  # min: benchmarks only
        self.batch_tokens = batch_tokens
        self.stop_ids = [end_of_turn_id(self.tokenizer), self.tokenizer.eos_token_id]

    @classmethod
    def load(cls, model_dir: str | Path, max_new_tokens: int, batch_tokens: int = 8192) -> HFBackend:
        return cls(load_model(model_dir), load_tokenizer(model_dir, chat=True), max_new_tokens, batch_tokens)

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices grouped longest first, each batch's (prompt + answer) tokens within the budget."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        for i in order:
            width = lengths[batches[-1][0]] + self.max_new_tokens if batches else 0
            if batches and width * (len(batches[-1]) + 1) <= self.batch_tokens:
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    @torch.no_grad()
    def generate(self, prompts: list[str]) -> list[str]:
        encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        outputs: list[str] = [""] * len(prompts)
        device = next(self.model.parameters()).device
        with tqdm(total=len(prompts), desc="generate", unit="ex") as progress:
            for batch in self._batches([len(ids) for ids in encoded]):
                padded = self.tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
                generated = self.model.generate(
                    input_ids=padded["input_ids"].to(device),
                    attention_mask=padded["attention_mask"].to(device),
                    max_new_tokens=self.max_new_tokens,
                    min_new_tokens=self.min_new_tokens,
                    do_sample=False,
                    eos_token_id=self.stop_ids,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                new_tokens = generated[:, padded["input_ids"].shape[1]:]
                for i, text in zip(batch, self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True),
                                   strict=True):
                    outputs[i] = text.strip()
                progress.update(len(batch))
        return outputs


class VLLMBackend:
    """vLLM's offline engine on the merged model directory, fed the same token ids as the HF path."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, max_new_tokens: int):
        from vllm import LLM, SamplingParams

        self.tokenizer = load_tokenizer(model_dir, chat=True)
        self.engine = LLM(model=str(model_dir), dtype="bfloat16", enable_prefix_caching=True)
        self.params = SamplingParams(
            temperature=0.0, max_tokens=max_new_tokens,
            stop_token_ids=[end_of_turn_id(self.tokenizer), self.tokenizer.eos_token_id],
        )

    def generate(self, prompts: list[str]) -> list[str]:
        encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        requests = [{"prompt_token_ids": ids} for ids in encoded]
        results = self.engine.generate(requests, self.params, use_tqdm=True)
        return [r.outputs[0].text.strip() for r in results]


def make_backend(name: str, model_dir: str | Path, max_new_tokens: int, batch_tokens: int) -> Backend:
    """`auto`: vLLM when installed and a GPU is present, else HF. Asking for vLLM without it is an error."""
    vllm_ok = has_package("vllm") and use_cuda()
    if name == "vllm" and not vllm_ok:
        raise ValueError("--backend vllm needs a GPU and vLLM (pip install 'omics[vllm]'); use --backend hf")
    if name == "vllm" or (name == "auto" and vllm_ok):
        return VLLMBackend(model_dir, max_new_tokens)
    log.info("generation backend: HF transformers (batched, KV cache)%s",
             "" if name == "hf" else "; install vLLM for faster evaluation on GPU")
    return HFBackend.load(model_dir, max_new_tokens, batch_tokens)
