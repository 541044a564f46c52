"""Preference pairs for DPO: `{"prompt", "chosen", "rejected"}` per line, every line validated and named.

Two forms, as TRL reads them: strings (the question, and two answers), or conversational (the prompt a list
of {role, content} messages, each answer a list of assistant messages). A string prompt is asked under the
model's system prompt, as Stage 2-3 training and evaluation ask the same question, so DPO trains the
answers to the prompts the model is used with. Torch-free: `omics pairs` checks what it writes with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omics.data.validate import DataError, DataReport, _finish, text_lines

FIELDS = ("prompt", "chosen", "rejected")
ROLES = ("system", "user", "assistant")
Messages = list[dict[str, str]]


def _messages_problem(key: str, value: Any, answer: bool) -> str | None:
    """None when `value` is a non-empty list of {role, content} messages (answers: assistant turns only)."""
    if not isinstance(value, list) or not value:
        return f"field {key!r} must be a non-empty string or a non-empty list of {{role, content}} messages"
    for n, message in enumerate(value, 1):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            return f"field {key!r} message {n} must be an object with exactly 'role' and 'content'"
        if message["role"] not in ROLES or not isinstance(message["content"], str) or not message["content"].strip():
            return f"field {key!r} message {n}: role must be one of {ROLES} and content a non-empty string"
        if answer and message["role"] != "assistant":
            return f"field {key!r} message {n}: an answer holds assistant messages only, got {message['role']!r}"
    if not answer and value[-1]["role"] != "user":
        return f"field {key!r}: the prompt's last message must be the user's, got {value[-1]['role']!r}"
    return None


def pair_problem(record: Any) -> str | None:
    """Why a parsed line is not a usable pair, or None."""
    if not isinstance(record, dict):
        return "line is not a JSON object"
    if missing := [k for k in FIELDS if k not in record]:
        return f"missing field(s) {', '.join(missing)}"
    strings = [isinstance(record[k], str) for k in FIELDS]
    if all(strings):
        if empty := [k for k in FIELDS if not record[k].strip()]:
            return f"field {empty[0]!r} is an empty string"
    elif any(strings[1:]) and not all(strings[1:]):
        return "'chosen' and 'rejected' must have the same form (both strings or both message lists)"
    else:
        for key in FIELDS:
            if not isinstance(record[key], str) and (problem := _messages_problem(key, record[key], key != "prompt")):
                return problem
    if record["chosen"] == record["rejected"] or (all(strings[1:]) and record["chosen"].strip() ==
                                                  record["rejected"].strip()):
        return "'chosen' equals 'rejected': the pair prefers nothing"
    return None


def conversation(record: dict, system: str) -> dict[str, Messages]:
    """A validated pair in TRL's conversational form: a string prompt asked under `system`, a message-list
    prompt without a system turn given it too (the model's own prompt: a reasoning model keeps its reasoning
    prompt), answers as assistant turns."""
    prompt = record["prompt"]
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    answer = {k: [{"role": "assistant", "content": record[k]}] if isinstance(record[k], str) else record[k]
              for k in ("chosen", "rejected")}
    return {"prompt": messages, **answer}


def read_pairs(path: str | Path, report: DataReport, on_bad_line: str = "skip") -> Iterator[dict]:
    """Yield the valid pairs of a .jsonl file (with their `line`); a bad line stops the run (`on_bad_line`
    "stop") or is skipped and counted in `report` by reason and line number."""
    path = Path(path)
    for lineno, line in text_lines(path, report):
        try:
            record = json.loads(line)
            problem = pair_problem(record)
        except json.JSONDecodeError as err:
            record, problem = None, f"invalid JSON ({err.msg})"
        if problem is not None:
            if on_bad_line == "stop":
                raise DataError(f"{path}:{lineno}: {problem}. Fix the line, or pass --set on_bad_line=skip to "
                                "skip bad lines with a report.")
            report.bad(lineno, problem)
            continue
        report.valid += 1
        report.tasks[str(record.get("task") or "unknown")] += 1
        yield {**{k: record[k] for k in FIELDS}, "line": lineno}
    _finish(report, "pair")
