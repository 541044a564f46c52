"""`omics synthesize --data train.jsonl --out reasoning.jsonl --base-url URL --model NAME`: Stage 3 lines from
Stage 2 lines, the reasoning written by a teacher model behind any OpenAI-compatible API.

Each line is asked (the official async `openai` client, its own retries off: ours are paced and counted), its
reply checked (prompt.py), rejected replies asked again with the reason, up to --max-retries times. Requests are
paced to --rpm / --tpm (limits.py); results are appended as they come (files.py), so rerunning the same command
continues where it stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import time
from argparse import Namespace
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from omics.errors import UserError
from omics.synthesize.files import Results
from omics.synthesize.limits import Limits, retry_after, retry_delay
from omics.synthesize.prompt import (
    check_reply,
    feedback,
    load_template,
    reasoning_line,
    reasoning_text,
    render,
    unusable,
)
from omics.synthesize.select import Selection, select

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from omics.tasktypes import TaskSpec

log = logging.getLogger("omics")
NO_KEY = "no-key"  # what a key-less local server is sent: the client insists on some key
FATAL_STATUS = (401, 403, 404)  # wrong key, model or URL: no line would fare better
RETRIED_STATUS = (408, 409, 429)  # and every 5xx
CHARS_PER_TOKEN = 4  # the estimate a request is paced by, corrected by the usage the server reports
FIRST_COMPLETION_GUESS = 256  # tokens a reply is expected to take before any has been seen
SUMMARY_EVERY_S = 10.0
REPLY_KEPT_CHARS = 2000  # of a rejected line's last reply, in the rejected file


def api_key(env_var: str) -> str | None:
    """The key from the environment, else from a `KEY=value` line of ./.env; None for a key-less server."""
    if value := os.environ.get(env_var):
        return value
    dotenv = Path(".env")
    if dotenv.is_file():
        for line in dotenv.read_text(encoding="utf-8").splitlines():
            name, equals, value = line.strip().removeprefix("export ").partition("=")
            if equals and name.strip() == env_var:
                return value.strip().strip("'\"") or None
    return None


class Unanswered(Exception):
    """The teacher gave no reply within --api-retries: the line is left for the next run."""


class Refused(Exception):
    """The API refused this line's request (a 4xx other than a rate limit, e.g. too long): the line is rejected."""


@dataclass
class Tally:
    """What the progress bar and the summary count: per task, over this run and the runs before it."""

    requested: Counter
    accepted: Counter = field(default_factory=Counter)
    rejected: defaultdict = field(default_factory=lambda: defaultdict(Counter))  # task → reason → n
    unanswered: Counter = field(default_factory=Counter)
    tokens: defaultdict = field(default_factory=lambda: defaultdict(Counter))  # task → prompt/completion → n
    retries: Counter = field(default_factory=Counter)  # "feedback", or the API failure retried
    requests: int = 0  # this run's
    started: float = field(default_factory=time.monotonic)

    def total_tokens(self, kind: str | None = None) -> int:
        return sum(t[kind] if kind else sum(t.values()) for t in self.tokens.values())

    def finished(self) -> int:
        return sum(self.accepted.values()) + sum(sum(r.values()) for r in self.rejected.values())


def server_message(err: Any) -> str:
    """What an API error's body says (OpenAI's {"error": {"message"}} shape, or FastAPI's {"detail"}), else its text."""
    body = err.body if isinstance(err.body, dict) else {}
    inner = body.get("error", body)
    message = inner.get("message") or inner.get("detail") if isinstance(inner, dict) else None
    return str(message or err.message)[:300]


class Teacher:
    """One line at a time: asked, checked, asked again with the reason, paced, retried on API failures."""

    def __init__(self, client: AsyncOpenAI, args: Namespace, template: str, specs: dict[str, TaskSpec],
                 tally: Tally, secret: str | None):
        self.client, self.args, self.template, self.specs, self.tally = client, args, template, specs, tally
        self.limits = Limits(args.rpm, args.tpm)
        self.rng = random.Random(args.seed)
        self.secret = secret
        self.completion_tokens: list[int] = []
        self.prompt_tokens = [0, 0]  # (as the server counted, as estimated): scales the estimate to its tokenizer
        self.reached = False  # a reply came: a later lost connection is a blip worth retrying, not a wrong URL

    def redact(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text

    async def line(self, record: dict) -> tuple[str, dict | None]:
        """("accepted", Stage 3 line), ("rejected", rejected row) or ("unanswered", None)."""
        spec = self.specs.get(record["task"])
        if problem := unusable(record, spec):
            return "rejected", self.rejection(record, problem, 0, "")
        messages = [{"role": "user", "content": render(self.template, record)}]
        reply = ""
        for attempt in range(self.args.max_retries + 1):
            if attempt:
                self.tally.retries["feedback"] += 1
                messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": feedback(*problem)}]
            try:
                reply, finished = await self.complete(messages, record)
            except Unanswered:
                return "unanswered", None
            except Refused as refusal:
                return "rejected", self.rejection(record, ("refused by the API", str(refusal)), attempt + 1, reply)
            if (problem := check_reply(reply, finished, record, spec)) is None:
                return "accepted", reasoning_line(record, reasoning_text(reply))
        return "rejected", self.rejection(record, problem, self.args.max_retries + 1, reply)

    def rejection(self, record: dict, problem: tuple[str, str], attempts: int, reply: str) -> dict:
        reason, detail = problem
        return {"key": record["key"], "line": record["line"], "task": record["task"], "reason": reason,
                "detail": self.redact(detail), "attempts": attempts, "input": record["input"],
                "output": record["output"], "label": record["label"], "last_reply": reply[:REPLY_KEPT_CHARS]}

    @staticmethod
    def prompt_estimate(messages: list[dict]) -> int:
        return sum(len(m["content"]) for m in messages) // CHARS_PER_TOKEN + 4 * len(messages)

    def estimate(self, messages: list[dict]) -> int:
        """Tokens a request is paced by before its usage is known: its prompt (chars / 4, scaled by how the server
        counted earlier prompts), and a reply as long as recent ones."""
        counted, estimated = self.prompt_tokens
        seen = self.completion_tokens[-100:]
        return (round(self.prompt_estimate(messages) * (counted / estimated if estimated else 1))
                + (sum(seen) // len(seen) if seen else min(FIRST_COMPLETION_GUESS, self.args.max_tokens)))

    async def complete(self, messages: list[dict], record: dict) -> tuple[str, bool]:
        """(reply, ended by itself) for the conversation so far; API failures are retried after a backoff."""
        import openai

        estimate = self.estimate(messages)
        for attempt in range(self.args.api_retries + 1):
            await self.limits.take(estimate)
            self.tally.requests += 1
            try:
                response = await self.client.chat.completions.create(
                    model=self.args.model, messages=messages, max_tokens=self.args.max_tokens,
                    temperature=self.args.temperature)
            except openai.APIStatusError as err:
                self.limits.correct(-estimate)  # a refused request costs no tokens
                if err.status_code in FATAL_STATUS:
                    raise UserError(f"the teacher at {self.args.base_url} refused the request: HTTP {err.status_code}"
                                    f" ({self.redact(server_message(err))}); check --base-url (most servers' ends in "
                                    f"/v1), --model and the key (--api-key-env {self.args.api_key_env}, or ./.env)"
                                    ) from None
                if err.status_code not in RETRIED_STATUS and err.status_code < 500:
                    raise Refused(f"HTTP {err.status_code}: {str(err)[:300]}") from None
                failure, server_asks = f"HTTP {err.status_code}", retry_after(err.response.headers)
            except (openai.APITimeoutError, openai.APIConnectionError) as err:
                self.limits.correct(-estimate)
                if not self.reached and not isinstance(err, openai.APITimeoutError):
                    raise UserError(f"cannot reach the teacher at {self.args.base_url} ({err.__cause__ or err}): "
                                    "check --base-url and that the server is running") from None
                failure, server_asks = ("timeout" if isinstance(err, openai.APITimeoutError) else "connection"), None
            else:
                return self.received(response, messages, estimate, record["task"])
            self.tally.retries[failure] += 1
            if attempt == self.args.api_retries:
                break
            delay = retry_delay(attempt, server_asks, self.rng)
            log.info("%s from the teacher for line %s: retry %d/%d in %.1f s%s", failure, record["line"],
                     attempt + 1, self.args.api_retries, delay, " (Retry-After)" if server_asks else "")
            await asyncio.sleep(delay)
        self.tally.unanswered[record["task"]] += 1
        log.warning("line %s: no reply after %d attempts; rerun the same command to ask it again", record["line"],
                    self.args.api_retries + 1)
        raise Unanswered

    def received(self, response: Any, messages: list[dict], estimate: int, task: str) -> tuple[str, bool]:
        """The reply and whether it ended by itself; its tokens (as the server counts them) charged and tallied."""
        self.reached = True
        choice = response.choices[0]
        reply = choice.message.content or ""
        usage = response.usage
        prompt = usage.prompt_tokens if usage else self.prompt_estimate(messages)
        completion = usage.completion_tokens if usage else len(reply) // CHARS_PER_TOKEN
        self.limits.correct(prompt + completion - estimate)
        self.completion_tokens.append(completion)
        if usage:
            counted, estimated = self.prompt_tokens
            self.prompt_tokens = [counted + prompt, estimated + self.prompt_estimate(messages)]
        self.tally.tokens[task].update({"prompt": prompt, "completion": completion})
        return reply, choice.finish_reason != "length"


def content_sha256(path: Path) -> str:
    """Of the data file, read in blocks (omics.data.packing's would import torch for it)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def settings_of(args: Namespace, template: str) -> dict[str, Any]:
    """What makes a synthesis the same one: a rerun with any of these changed is refused. Not among them: --limit
    (a larger one continues the same selection), --base-url (the same teacher, moved or restarted elsewhere), the
    pace and the retries."""
    return {"data": str(args.data.resolve()), "data_sha256": content_sha256(args.data), "model": args.model,
            "prompt_sha256": hashlib.sha256(template.encode()).hexdigest(), "per_task": args.per_task,
            "seed": args.seed}


def cost(tally: Tally, args: Namespace) -> float | None:
    if args.price_per_million_input is None and args.price_per_million_output is None:
        return None
    return (tally.total_tokens("prompt") * (args.price_per_million_input or 0)
            + tally.total_tokens("completion") * (args.price_per_million_output or 0)) / 1e6


def summary_of(settings: dict, tally: Tally, args: Namespace, left: int, status: str) -> dict[str, Any]:
    """The summary JSON: per task and in total (over every run of this synthesis), throughput of this run."""
    tasks = sorted(set(tally.requested) | set(tally.accepted) | set(tally.rejected))
    per_task = {t: {"requested": tally.requested[t], "accepted": tally.accepted[t],
                    "rejected": sum(tally.rejected[t].values()), "rejected_by_reason": dict(tally.rejected[t]),
                    "unanswered": tally.unanswered[t], "tokens": dict(tally.tokens[t])} for t in tasks}
    minutes = max(time.monotonic() - tally.started, 1e-9) / 60
    spent = cost(tally, args)
    per_line = spent / tally.finished() if spent is not None and tally.finished() else None
    return {
        "settings": settings, "status": status,
        "totals": {key: sum(p[key] for p in per_task.values())
                   for key in ("requested", "accepted", "rejected", "unanswered")}
        | {"left": left, "tokens": {"prompt": tally.total_tokens("prompt"),
                                    "completion": tally.total_tokens("completion")}},
        "per_task": per_task,
        "retries": dict(tally.retries),
        "this_run": {"base_url": args.base_url, "requests": tally.requests, "minutes": round(minutes, 3),
                     "requests_per_minute": round(tally.requests / minutes, 1),
                     "rpm_limit": args.rpm, "tpm_limit": args.tpm or None, "concurrency": args.concurrency},
        "cost": None if spent is None else {"so_far": round(spent, 6), "per_line": per_line,
                                            "estimate_for_the_rest": round(per_line * left, 6) if per_line else None,
                                            "price_per_million": {"input": args.price_per_million_input,
                                                                  "output": args.price_per_million_output}},
    }


def check_args(args: Namespace) -> None:
    for name, least in (("per_task", 1), ("limit", 1), ("rpm", 1), ("tpm", 0), ("concurrency", 1),
                        ("max_retries", 0), ("api_retries", 0), ("max_tokens", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            raise UserError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
    if args.out.suffix != ".jsonl":
        raise UserError(f"--out {args.out}: Stage 3 data is .jsonl; name the file NAME.jsonl")
    if args.timeout <= 0:
        raise UserError(f"--timeout must be positive, got {args.timeout}")


def pending(selection: Selection, done: set[str]) -> Iterator[dict]:
    """The selected lines not yet finished, each handed out once (marked as soon as it is asked)."""
    for record in selection.records():
        if record["key"] not in done:
            done.add(record["key"])
            yield record


async def synthesize(lines: Iterator[dict], args: Namespace, secret: str | None,
                     teacher_of: Callable[[AsyncOpenAI], Teacher], results: Results, tally: Tally, progress: tqdm,
                     save_summary: Callable[[str], dict]) -> None:
    """--concurrency workers share the lines; each result is appended the moment it is known."""
    from openai import AsyncOpenAI

    saved = time.monotonic()

    async def worker(teacher: Teacher) -> None:
        nonlocal saved
        for record in lines:
            outcome, row = await teacher.line(record)
            task = record["task"]
            if outcome == "accepted":
                results.accepted.append(row)
                tally.accepted[task] += 1
            elif outcome == "rejected":
                results.rejected.append(row)
                tally.rejected[task][row["reason"]] += 1
            if outcome != "unanswered":
                progress.update(1)
            progress.set_postfix(status_line(tally, args), refresh=False)
            if time.monotonic() - saved >= SUMMARY_EVERY_S:
                saved = time.monotonic()
                save_summary("running")

    async with AsyncOpenAI(base_url=args.base_url, api_key=secret or NO_KEY, max_retries=0,
                           timeout=args.timeout) as client:
        teacher = teacher_of(client)
        await asyncio.gather(*(worker(teacher) for _ in range(args.concurrency)))


def status_line(tally: Tally, args: Namespace) -> dict[str, str]:
    """The progress bar's counts."""
    accepted = sum(tally.accepted.values())
    shown = {"ok": str(accepted), "rejected": str(tally.finished() - accepted), "tokens": f"{tally.total_tokens():,}"}
    if (spent := cost(tally, args)) is not None:
        shown["cost"] = f"${spent:.4f}"
    return shown


def run(args: Namespace) -> int:
    from omics.data.labels import training_label_summary
    from omics.evaluate.tasks import build_task_specs

    check_args(args)
    for name in ("openai", "httpx", "httpx2"):  # a line per request otherwise
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    template = load_template(args.prompt_template)
    secret = api_key(args.api_key_env)
    if secret is None:
        log.info("no API key in $%s or ./.env: calling %s without one", args.api_key_env, args.base_url)
    results = Results(args.out)
    settings = settings_of(args, template)
    previous = results.previous(settings, args.overwrite)
    selection = select(args.data, args.per_task, args.limit, args.seed)
    log.info("%s", selection.report.summary())
    specs = build_task_specs(training_label_summary(args.data))
    kept, rejected = results.done() if previous else ({}, {})
    tally = Tally(selection.requested, accepted=Counter(kept.values()))
    for task, reason in rejected.values():
        tally.rejected[task][reason] += 1
    for task, tokens in (previous or {}).get("per_task", {}).items():
        tally.tokens[task].update(tokens["tokens"])
    done = set(kept) | set(rejected)
    already = sum(1 for r in selection.records() if r["key"] in done) if done else 0
    if already:
        log.info("continuing %s: %d of the %d lines selected are done", args.out, already, selection.total)

    def save_summary(status: str) -> dict:
        summary = summary_of(settings, tally, args, selection.total - progress.n, status)
        results.write_summary(summary)
        return summary

    with tqdm(total=selection.total, initial=already, unit="line", desc="synthesize", smoothing=0.05) as progress:
        save_summary("running")  # first: it marks the files beside it as omics'
        status = "interrupted"
        try:
            asyncio.run(synthesize(pending(selection, done), args, secret,
                                   lambda client: Teacher(client, args, template, specs, tally, secret),
                                   results, tally, progress, save_summary))
            status = "incomplete" if sum(tally.unanswered.values()) else "complete"
        except KeyboardInterrupt:  # Ctrl-C: what was written stays, the summary says so
            pass
        except UserError:  # the teacher refused every request, or is not there: said once, by the caller
            status = "stopped"
            raise
        finally:
            results.close()
            summary = save_summary(status)
    report(summary, args, results)
    if status == "interrupted":
        raise UserError(f"interrupted: rerun the same command to continue ({summary['totals']['left']} lines left)")
    if status == "incomplete":
        raise UserError(f"{summary['totals']['unanswered']} lines got no reply from the teacher (retries: "
                        f"{summary['retries']}); rerun the same command to ask them again")
    return summary["totals"]["accepted"]


def report(summary: dict, args: Namespace, results: Results) -> None:
    totals, this_run = summary["totals"], summary["this_run"]
    print(f"{args.out}: {totals['accepted']} lines accepted, {totals['rejected']} rejected "
          f"({results.rejected.path.name}), {totals['left']} left"
          f"{f' of the {args.limit} lines --limit selects (a larger --limit continues)' if args.limit else ''}; "
          f"this run: {this_run['requests']} requests in "
          f"{this_run['minutes']:.2f} min ({this_run['requests_per_minute']}/min), "
          f"{sum(totals['tokens'].values()):,} tokens in all")
    if summary["cost"] is not None:
        rest = summary["cost"]["estimate_for_the_rest"]
        print(f"cost: ${summary['cost']['so_far']:.4f} so far"
              + (f"; about ${rest:.4f} for the {totals['left']} lines left" if totals["left"] and rest else ""))
    print(f"summary: {results.summary_path}")
