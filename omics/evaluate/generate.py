"""Generation backends behind one interface: greedy answers to chat prompts, stopping at end of turn.

`HFBackend` (always available): length-sorted dynamic batches under a token budget, left padding, KV cache,
early exit when every sequence has stopped. `VLLMBackend` when vLLM is installed and a GPU is present.
Both take the same prompt token ids, the ones training used (`omics.data.instructions.prompt_text`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from omics.device import default_batch_tokens, has_package, model_dtype, use_cuda
from omics.errors import UserError
from omics.model import end_of_turn_id, load_model, load_tokenizer

log = logging.getLogger("omics")


TOP_LOGPROBS = 20  # alternatives kept per generated token: enough to find the true class's word


@dataclass
class Generation:
    """A greedy answer, its token ids, and per token the top alternatives' log-probabilities."""

    text: str
    token_ids: list[int]
    top_logprobs: list[dict[int, float]] | None = None


class Backend(Protocol):
    name: str
    tokenizer: PreTrainedTokenizerBase

    def generate(self, prompts: list[str]) -> list[Generation]: ...


class _RecordTopLogprobs(LogitsProcessor):
    """Keeps the top-k log-probabilities of every decoding step (scores pass through unchanged)."""

    def __init__(self, k: int):
        self.k, self.steps = k, []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        top = torch.log_softmax(scores.float(), dim=-1).topk(self.k)
        self.steps.append((top.indices.cpu(), top.values.cpu()))
        return scores


class HFBackend:
    name = "hf"

    def __init__(self, model, tokenizer, max_new_tokens: int, batch_tokens: int = 8192, min_new_tokens: int = 0):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.min_new_tokens = max_new_tokens, min_new_tokens  # min: benchmarks only
        self.batch_tokens = batch_tokens
        self.stop_ids = [end_of_turn_id(self.tokenizer), self.tokenizer.eos_token_id]

    @classmethod
    def load(cls, model_dir: str | Path, max_new_tokens: int, batch_tokens: int = 8192,
             dtype: str = "auto") -> HFBackend:
        model = load_model(model_dir, dtype=dtype).eval()
        return cls(model, load_tokenizer(model_dir, chat=True), max_new_tokens, batch_tokens)

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
    def generate(self, prompts: list[str]) -> list[Generation]:
        if not prompts:
            return []
        encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        outputs: list[Generation | None] = [None] * len(prompts)
        device = next(self.model.parameters()).device
        with tqdm(total=len(prompts), desc="generate", unit="ex") as progress:
            for batch in self._batches([len(ids) for ids in encoded]):
                padded = self.tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt",
                                            padding_side="left")
                recorder = _RecordTopLogprobs(TOP_LOGPROBS)
                generated = self.model.generate(
                    input_ids=padded["input_ids"].to(device),
                    attention_mask=padded["attention_mask"].to(device),
                    max_new_tokens=self.max_new_tokens,
                    min_new_tokens=self.min_new_tokens,
                    do_sample=False,
                    eos_token_id=self.stop_ids,
                    pad_token_id=self.tokenizer.pad_token_id,
                    logits_processor=LogitsProcessorList([recorder]),
                )
                new_tokens = generated[:, padded["input_ids"].shape[1]:].tolist()
                for row, i in enumerate(batch):
                    ids = new_tokens[row]
                    stop = next((t for t, token in enumerate(ids) if token in self.stop_ids), len(ids))
                    top = [dict(zip(recorder.steps[t][0][row].tolist(), recorder.steps[t][1][row].tolist(),
                                    strict=True)) for t in range(stop)]
                    text = self.tokenizer.decode(ids[:stop], skip_special_tokens=True).strip()
                    outputs[i] = Generation(text, ids[:stop], top)
                progress.update(len(batch))
        return outputs


class VLLMBackend:
    """vLLM's offline engine on the merged model directory, fed the same token ids as the HF path."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, max_new_tokens: int, dtype: str = "auto"):
        from vllm import LLM, SamplingParams

        self.tokenizer = load_tokenizer(model_dir, chat=True)
        self.engine = LLM(model=str(model_dir), dtype=str(model_dtype(dtype)).removeprefix("torch."),
                          enable_prefix_caching=True)
        self.params = SamplingParams(
            temperature=0.0, max_tokens=max_new_tokens, logprobs=TOP_LOGPROBS,
            stop_token_ids=[end_of_turn_id(self.tokenizer), self.tokenizer.eos_token_id],
        )

    def requests(self, prompts: list[str]) -> list[dict]:
        """vLLM token prompts: the same ids as training and the HF path (no second BOS, no re-templating)."""
        return [{"prompt_token_ids": ids} for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]

    def generate(self, prompts: list[str]) -> list[Generation]:
        results = self.engine.generate(self.requests(prompts), self.params, use_tqdm=True)
        return [Generation(out.text.strip(), list(out.token_ids),
                           [{token: lp.logprob for token, lp in step.items()} for step in out.logprobs or []])
                for out in (r.outputs[0] for r in results)]


def make_backend(name: str, model_dir: str | Path, max_new_tokens: int, batch_tokens: int | None,
                 dtype: str = "auto") -> Backend:
    """`auto`: vLLM when installed and a GPU is present, else HF. Asking for vLLM without it is an error."""
    vllm_ok = has_package("vllm") and use_cuda()
    if name == "vllm" and not vllm_ok:
        raise UserError("--backend vllm needs a GPU and vLLM (make vllm-env, then run .venv-vllm/bin/omics); "
                        "use --backend hf")
    if name == "vllm" or (name == "auto" and vllm_ok):
        return VLLMBackend(model_dir, max_new_tokens, dtype)
    log.info("generation backend: HF transformers (batched, KV cache)%s",
             "" if name == "hf" else "; install vLLM for faster evaluation on GPU")
    return HFBackend.load(model_dir, max_new_tokens, default_batch_tokens(batch_tokens), dtype)
