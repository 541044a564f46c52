"""Generation backends behind one interface: greedy answers to chat prompts, stopping at end of turn.

`HFBackend` (always available): length-sorted dynamic batches under a token budget, left padding, KV cache,
early exit when every sequence has stopped. `VLLMBackend` when vLLM is installed and a GPU is present.
Both take the same prompt token ids, the ones training used (`omics.data.instructions.prompt_text`), and
hand answers out batch by batch (`stream`); `omics.evaluate.stream` turns each into its row at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from omics.device import default_batch_tokens, has_package, model_dtype, use_cuda
from omics.errors import UserError
from omics.model import end_of_turn_id, load_model, load_tokenizer

log = logging.getLogger("omics")


TOP_LOGPROBS = 20  # alternatives kept per generated token: enough to find the true class's word
VLLM_CHUNK = 256  # prompts per vLLM call: bounds the per-token log-probability objects it returns


class TopLogprobs(Sequence):
    """Per generated token, the top alternatives' log-probabilities: tensors, a dict built only when read.

    Scoring reads one position per example; building a dict for every token cost ~1.7 kB per token.
    """

    def __init__(self, indices: torch.Tensor, values: torch.Tensor):
        self.indices, self.values = indices, values  # [steps, k]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, step: int) -> dict[int, float]:
        return dict(zip(self.indices[step].tolist(), self.values[step].tolist(), strict=True))


@dataclass
class Generation:
    """A greedy answer, its token ids, and per token the top alternatives' log-probabilities.

    Lives only until its batch is scored: the evaluation keeps the one probability it needs (`finish`).
    """

    text: str
    token_ids: list[int]
    top_logprobs: Sequence[dict[int, float]] | None = None


class Backend(Protocol):
    name: str
    tokenizer: PreTrainedTokenizerBase

    def stream(self, prompt_ids: list[np.ndarray]) -> Iterator[list[tuple[int, Generation]]]: ...


class _RecordTopLogprobs(LogitsProcessor):
    """Top-k log-probabilities of every decoding step of one batch (scores pass through unchanged).

    Written into buffers allocated once per batch: small tensors kept per step between each step's large
    vocabulary-sized temporaries fragment the host heap (measured: +15 MB RSS per step on CPU, 4.4 GB for
    300 steps of an 18-prompt batch; 0.1 GB with the buffers). No full log_softmax: top-k minus logsumexp.
    """

    def __init__(self, k: int, steps: int):
        self.k, self.steps, self.step = k, steps, 0
        self.indices: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.indices is None:
            shape = (scores.shape[0], self.steps, self.k)
            self.indices = torch.zeros(shape, dtype=torch.int32, device=scores.device)
            self.values = torch.zeros(shape, dtype=torch.float32, device=scores.device)
        top = scores.topk(self.k)
        self.indices[:, self.step] = top.indices
        self.values[:, self.step] = top.values.float() - torch.logsumexp(scores.float(), dim=-1, keepdim=True)
        self.step += 1
        return scores


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[np.ndarray]:
    """Token ids of rendered prompts (BOS is in the text), as compact arrays."""
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    return [np.asarray(one, dtype=np.int32) for one in ids]


class HFBackend:
    name = "hf"

    def __init__(self, model, tokenizer, max_new_tokens: int, batch_tokens: int = 8192, min_new_tokens: int = 0,
                 temperature: float = 0.0):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.min_new_tokens = max_new_tokens, min_new_tokens  # min: benchmarks only
        self.temperature = temperature  # 0: greedy (evaluation); > 0: sampled (omics pairs; seed torch first)
        self.batch_tokens = batch_tokens
        self.stop_ids = [end_of_turn_id(self.tokenizer), self.tokenizer.eos_token_id]

    @classmethod
    def load(cls, model_dir: str | Path, max_new_tokens: int, batch_tokens: int = 8192,
             dtype: str = "auto", temperature: float = 0.0) -> HFBackend:
        model = load_model(model_dir, dtype=dtype).eval()
        return cls(model, load_tokenizer(model_dir, chat=True), max_new_tokens, batch_tokens, temperature=temperature)

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

    def generate(self, prompts: list[str]) -> list[Generation]:
        """Every answer at once, in input order (benchmarks and tests; evaluation streams)."""
        found = dict(pair for batch in self.stream(encode_prompts(self.tokenizer, prompts)) for pair in batch)
        return [found[i] for i in range(len(prompts))]

    @torch.no_grad()
    def stream(self, prompt_ids: list[np.ndarray]) -> Iterator[list[tuple[int, Generation]]]:
        """(position in prompt_ids, answer) per prompt, one list per batch as soon as the batch is decoded."""
        device = next(self.model.parameters()).device
        for batch in self._batches([len(ids) for ids in prompt_ids]):
            width = max(len(prompt_ids[i]) for i in batch)
            input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            for row, i in enumerate(batch):  # left padding
                input_ids[row, width - len(prompt_ids[i]):] = torch.from_numpy(prompt_ids[i])
                attention_mask[row, width - len(prompt_ids[i]):] = 1
            recorder = _RecordTopLogprobs(TOP_LOGPROBS, self.max_new_tokens)
            generated = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=self.max_new_tokens,
                min_new_tokens=self.min_new_tokens,
                do_sample=self.temperature > 0,  # sampled: plain temperature, no top-k/top-p the model's config sets
                **({"temperature": self.temperature, "top_k": 0, "top_p": 1.0} if self.temperature > 0 else {}),
                eos_token_id=self.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList([recorder]),
            )
            new_tokens = generated[:, width:].tolist()
            indices, values = recorder.indices.cpu(), recorder.values.cpu()  # [batch, steps, k]
            answers = []
            for row, i in enumerate(batch):
                ids = new_tokens[row]
                stop = next((t for t, token in enumerate(ids) if token in self.stop_ids), len(ids))
                text = self.tokenizer.decode(ids[:stop], skip_special_tokens=True).strip()
                answers.append((i, Generation(text, ids[:stop], TopLogprobs(indices[row, :stop], values[row, :stop]))))
            yield answers


class VLLMBackend:
    """vLLM's offline engine on the merged model directory, fed the same token ids as the HF path."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, max_new_tokens: int, dtype: str = "auto", temperature: float = 0.0,
                 seed: int = 0):
        from vllm import LLM, SamplingParams

        self.tokenizer = load_tokenizer(model_dir, chat=True)
        self.engine = LLM(model=str(model_dir), dtype=str(model_dtype(dtype)).removeprefix("torch."),
                          enable_prefix_caching=True, seed=seed)
        self.params = SamplingParams(
            temperature=temperature, max_tokens=max_new_tokens, logprobs=TOP_LOGPROBS,
            stop_token_ids=[end_of_turn_id(self.tokenizer), self.tokenizer.eos_token_id],
        )

    def stream(self, prompt_ids: list[np.ndarray]) -> Iterator[list[tuple[int, Generation]]]:
        """The same token ids as training and the HF path (no second BOS, no re-templating), in chunks."""
        for start in range(0, len(prompt_ids), VLLM_CHUNK):
            requests = [{"prompt_token_ids": ids.tolist()} for ids in prompt_ids[start:start + VLLM_CHUNK]]
            results = self.engine.generate(requests, self.params, use_tqdm=False)
            yield [(start + n, Generation(out.text.strip(), list(out.token_ids),
                                          [{token: lp.logprob for token, lp in step.items()}
                                           for step in out.logprobs or []]))
                   for n, out in enumerate(r.outputs[0] for r in results)]


def make_backend(name: str, model_dir: str | Path, max_new_tokens: int, batch_tokens: int | None,
                 dtype: str = "auto", temperature: float = 0.0, seed: int = 0) -> Backend:
    """`auto`: vLLM when installed and a GPU is present, else HF. Asking for vLLM without it is an error.
    `temperature` > 0 samples (seeded by `seed`) instead of answering greedily."""
    vllm_ok = has_package("vllm") and use_cuda()
    if name == "vllm" and not vllm_ok:
        raise UserError("--backend vllm needs a GPU and vLLM (make vllm-env, then run .venv-vllm/bin/omics); "
                        "use --backend hf")
    if name == "vllm" or (name == "auto" and vllm_ok):
        return VLLMBackend(model_dir, max_new_tokens, dtype, temperature, seed)
    log.info("generation backend: HF transformers (batched, KV cache)%s",
             "" if name == "hf" else "; install vLLM for faster evaluation on GPU")
    backend = HFBackend.load(model_dir, max_new_tokens, default_batch_tokens(batch_tokens), dtype, temperature)
    torch.manual_seed(seed)  # HF samples from torch's generator: the same answers for the same seed
    return backend
