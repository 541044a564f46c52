"""The built-in server's generation worker: one model, one thread, concurrent requests decoded together.

Requests wait in a queue. The worker takes the first and collects more for a short window (within `Batching`'s
request and token limits), left-pads them into one batch, prefills it and then decodes one token per step for
every request with the KV cache, so each request streams its text as it is produced. A request that ends (a
stop token or string, its max_tokens, its client gone) leaves the batch and its cache rows are dropped;
requests that arrive meanwhile wait for the next batch. Each batch is logged ("batch of N request(s) …").
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger("omics")


@dataclass(frozen=True)
class Sampling:
    """One request's decoding settings: temperature 0 is greedy; `seed` makes sampling reproducible."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Finish:
    """The last event of a request: why it ended ("stop" or "length") and the tokens it generated (a stop
    token included, as vLLM counts)."""

    reason: str
    completion_tokens: int


Event = str | Finish | Exception  # a piece of text, the end, or the failure of its batch


@dataclass
class Job:
    prompt_ids: list[int]
    sampling: Sampling
    deliver: Callable[[Event], None]  # thread-safe: called from the worker
    cancelled: bool = False  # set when the client went away: the worker drops it at its next step


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters not to send yet: they may be the start of a stop string."""
    return max((k for stop in stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)


@dataclass
class _Row:
    """A request being decoded: its tokens, its text so far and how much of it was sent, its generator."""

    job: Job
    stop_ids: frozenset[int]
    tokenizer: PreTrainedTokenizerBase
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters delivered
    decoded: int = 0  # tokens whose text is in `text`
    context: int = 0  # tokens before those, decoded again with the new ones (their text is not repeated)
    generated: int = 0
    generator: torch.Generator | None = None

    @property
    def greedy(self) -> bool:
        return self.job.sampling.temperature == 0

    def sample(self, logits: torch.Tensor) -> int:
        sampling = self.job.sampling
        probs = torch.softmax(logits / sampling.temperature, dim=-1)
        if sampling.top_p < 1:  # the smallest set of most likely tokens whose probability reaches top_p
            ordered, order = probs.sort(descending=True)
            ordered[ordered.cumsum(0) - ordered >= sampling.top_p] = 0
            probs = torch.zeros_like(probs).scatter_(0, order, ordered)
        if sampling.seed is not None and self.generator is None:
            self.generator = torch.Generator(logits.device).manual_seed(sampling.seed)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def push(self, token: int) -> bool:
        """Take the next token, deliver the text it completes; True when the request has ended."""
        self.generated += 1
        if self.job.cancelled:
            return True
        stopped = token in self.stop_ids
        if not stopped:
            self.token_ids.append(token)
        last = stopped or self.generated >= self.job.sampling.max_tokens
        text = self._decode(final=last)
        stops = self.job.sampling.stop
        start = max(0, self.sent - max(map(len, stops), default=0))
        found = [at for stop in stops if (at := text.find(stop, start)) >= 0]
        if found:
            return self._finish("stop", text[:min(found)])
        if last:
            return self._finish("stop" if stopped else "length", text)
        self._send(text[:len(text) - held_back(text, stops)])
        return False

    def _decode(self, final: bool) -> str:
        """The text so far, extended by the new tokens' once they make whole characters (a character's UTF-8
        bytes may span tokens: U+FFFD until the last arrives). Decoding only the last few tokens, with the
        tokens before them as context, keeps each step's cost constant; without clean-up of spaces the text of
        a token is the same whatever follows."""
        options = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
        before = self.tokenizer.decode(self.token_ids[self.context:self.decoded], **options)
        now = self.tokenizer.decode(self.token_ids[self.context:], **options)
        if len(now) > len(before) and (final or not now.endswith("\ufffd")):
            self.text += now[len(before):]
            self.context, self.decoded = self.decoded, len(self.token_ids)
        return self.text

    def _send(self, text: str) -> None:
        if len(text) > self.sent:
            self.job.deliver(text[self.sent:])
            self.sent = len(text)

    def _finish(self, reason: str, text: str) -> bool:
        self._send(text)
        self.job.deliver(Finish(reason, self.generated))
        return True


@dataclass(frozen=True)
class Batching:
    """How batches are formed: at most `requests` requests, whose padded prompt + answer tokens (what the KV cache
    holds at the end) stay within `tokens` (a request larger than that runs alone), collected for `window_s`
    after the first."""

    requests: int = 16
    tokens: int = 8192
    window_s: float = 0.02

    def fits(self, batch: list[Job]) -> bool:
        width = max(len(job.prompt_ids) + job.sampling.max_tokens for job in batch)
        return len(batch) <= self.requests and len(batch) * width <= self.tokens


class Engine:
    """The one model in memory and the worker thread that answers every request with it."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stop_ids: set[int],
                 batching: Batching = Batching()):
        self.model, self.tokenizer, self.stop_ids = model, tokenizer, frozenset(stop_ids)
        self.batching = batching
        self.device = next(model.parameters()).device
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.next_job: Job | None = None  # the one that did not fit the last batch: the next batch's first
        threading.Thread(target=self._work, name="omics-generation", daemon=True).start()

    async def generate(self, prompt_ids: list[int], sampling: Sampling) -> AsyncIterator[str | Finish]:
        """The request's text as it is produced, then its Finish; a failure of its batch is raised."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        job = Job(prompt_ids, sampling, lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
        self.jobs.put(job)
        try:
            while True:
                event = await events.get()
                if isinstance(event, Exception):
                    raise event
                yield event
                if isinstance(event, Finish):
                    return
        finally:
            job.cancelled = True

    def _collect(self) -> list[Job]:
        """The next batch: the first waiting job and whatever arrives within the window after it and fits."""
        batch = [self.next_job or self.jobs.get()]
        self.next_job = None
        deadline = time.monotonic() + self.batching.window_s
        while len(batch) < self.batching.requests:
            try:
                job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not self.batching.fits([*batch, job]):
                self.next_job = job
                break
            batch.append(job)
        return [job for job in batch if not job.cancelled]

    def _work(self) -> None:
        while True:
            batch = self._collect()
            if not batch:
                continue
            lengths = [len(job.prompt_ids) for job in batch]  # logged before any of its answers is sent
            log.info("batch of %d request(s): prompts of %d-%d tokens", len(batch), min(lengths), max(lengths))
            started = time.monotonic()
            try:
                with torch.inference_mode():  # grad mode is per thread: set here, not by the caller
                    generated = self._decode(batch)
            except Exception as err:  # the batch fails, the server goes on; its requests get a 500
                log.exception("generation failed for a batch of %d request(s)", len(batch))
                for job in batch:
                    job.deliver(err)
                continue
            seconds = time.monotonic() - started
            log.info("batch done: %d tokens generated in %.2f s (%.1f tokens/s)", generated, seconds,
                     generated / max(seconds, 1e-9))

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 cache: DynamicCache) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)  # one position's logits, not the prompt's
        return out.logits[:, -1].float()

    def _decode(self, batch: list[Job]) -> int:
        """Decode the batch until every request has ended; returns the tokens generated."""
        rows = [_Row(job, self.stop_ids, self.tokenizer) for job in batch]
        width = max(len(job.prompt_ids) for job in batch)
        input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, job in enumerate(batch):  # left padding: every prompt ends where decoding starts
            input_ids[row, width - len(job.prompt_ids):] = torch.tensor(job.prompt_ids)
            mask[row, width - len(job.prompt_ids):] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(input_ids, mask, positions, cache)
        active = list(range(len(rows)))  # rows still decoding, in the cache's order
        while True:
            best = logits.argmax(-1).tolist()  # one device sync per step for every greedy request
            tokens = [best[k] if rows[i].greedy else rows[i].sample(logits[k]) for k, i in enumerate(active)]
            going = [k for k, (i, token) in enumerate(zip(active, tokens, strict=True)) if not rows[i].push(token)]
            if not going:
                return sum(row.generated for row in rows)
            if len(going) < len(active):  # ended requests leave the batch and the cache
                index = torch.tensor(going, device=self.device)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                active, tokens = [active[k] for k in going], [tokens[k] for k in going]
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            positions = positions[:, -1:] + 1
            logits = self._forward(torch.tensor(tokens, device=self.device)[:, None], mask, positions, cache)
