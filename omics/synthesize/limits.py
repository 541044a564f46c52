"""Pacing requests to a provider's limits: token buckets for requests and tokens per minute, and the backoff
after a refusal (429), a server error, a timeout or a dropped connection, honouring the server's Retry-After."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Mapping

BURST_SECONDS = 1.0  # a bucket saves up one second's worth: small bursts, steady pace
BASE_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 600.0


class TokenBucket:
    """`per_minute` units a minute, refilled continuously, at most `capacity` (default: one second's worth) saved
    up. A cost above that waits for a full bucket and leaves it in debt, so the pace never exceeds the limit."""

    def __init__(self, per_minute: float, capacity: float | None = None):
        self.rate = per_minute / 60
        self.capacity = capacity or max(1.0, self.rate * BURST_SECONDS)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self.turn = asyncio.Lock()  # first come, first served

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def take(self, cost: float) -> None:
        async with self.turn:
            self._refill()
            while self.level < (need := min(cost, self.capacity)):
                await asyncio.sleep((need - self.level) / self.rate)
                self._refill()
            self.level -= cost

    def correct(self, delta: float) -> None:
        """Charge `delta` more (or give back, when negative) once the true cost is known."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


class Limits:
    """Requests per minute (None: unlimited), evenly spaced, and tokens per minute (0: unlimited) together."""

    def __init__(self, rpm: float | None, tpm: float):
        self.requests = TokenBucket(rpm, capacity=1) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None

    async def take(self, tokens: int) -> None:
        if self.requests is not None:
            await self.requests.take(1)
        if self.tokens is not None:
            await self.tokens.take(tokens)

    def correct(self, tokens: int) -> None:
        if self.tokens is not None:
            self.tokens.correct(tokens)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks to wait: `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return min(MAX_RETRY_AFTER_S, max(0.0, float(ms) / 1000))
        if (value := headers.get("retry-after")) is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        return min(MAX_RETRY_AFTER_S, max(0.0, seconds))
    except (TypeError, ValueError):  # a header no one can read: back off as usual
        return None


def retry_delay(attempt: int, server_asks: float | None, rng: random.Random) -> float:
    """Exponential backoff (1, 2, 4 … s, capped) with jitter (half to all of it), never shorter than Retry-After."""
    backoff = min(MAX_BACKOFF_S, BASE_BACKOFF_S * 2**attempt) * (0.5 + rng.random() / 2)
    return max(backoff, server_asks or 0.0)
