"""Stages 2-3 data: {input, output, label, task} records → chat-formatted examples with answer-only loss.

One function renders a prompt for training and for generation alike (`prompt_text`), through the chat
template the saved model carries, so training, HF generation, vLLM and other tools see the same tokens.
An example longer than `max_length` is shortened in the middle of its longest sequence — never by cutting
the end of the prompt, which would drop the question and the assistant header.
"""

from __future__ import annotations

import math
import random
import zlib
from array import array
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from omics.config import TrainConfig
from omics.data.packing import IGNORE, Example
from omics.data.validate import DataError, DataReport, read_instructions
from omics.evaluate.parse import has_wellformed_reasoning
from omics.evaluate.tasks import LabelSummary
from omics.model import end_of_turn_id
from omics.sequences import TAG_PATTERN

TOKENIZE_BATCH = 512
MAX_SHORTEN_ROUNDS = 4


def prompt_text(tokenizer: PreTrainedTokenizerBase, question: str, system: str) -> str:
    """The chat-formatted prompt up to the assistant header (BOS included as text: tokenise without specials)."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


class PromptEncoder:
    """Token ids of chat prompts, the fixed parts (BOS, system turn, headers) tokenised once.

    Equal to tokenising `prompt_text(...)` whole: the template trims the question, the header's "\n\n" is
    always a token of its own before non-space text, and special tokens split the rest (tested on every
    sample question). Skipping the template and the repeated system prompt halves tokenisation time.
    """

    MARK = "\x00question\x00"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, system: str):
        self.tokenizer = tokenizer
        prefix, suffix = prompt_text(tokenizer, self.MARK, system).split(self.MARK)
        self.prefix, self.suffix = (tokenizer(part, add_special_tokens=False)["input_ids"] for part in (prefix, suffix))

    def __call__(self, questions: list[str]) -> list[list[int]]:
        bodies = self.tokenizer([q.strip() for q in questions], add_special_tokens=False)["input_ids"]
        return [[*self.prefix, *body, *self.suffix] for body in bodies]


def with_task_prefix(record: dict, fraction: float, seed: int) -> str:
    """The paper prefixed ~30% of questions with "[Classification: task]" / "[Regression: task]"."""
    if fraction <= 0 or zlib.crc32(f"{seed}:{record['line']}".encode()) / 2**32 >= fraction:
        return record["input"]
    numeric = isinstance(record["label"], int | float | dict) and not isinstance(record["label"], bool)
    return f"[{'Regression' if numeric else 'Classification'}: {record['task']}] {record['input']}"


def shorten_longest_sequence(question: str, excess_tokens: int, tokenizer: PreTrainedTokenizerBase) -> str | None:
    """Remove the middle of the longest tagged sequence, enough to drop about `excess_tokens` tokens."""
    matches = list(TAG_PATTERN.finditer(question))
    if not matches:
        return None
    longest = max(matches, key=lambda m: len(m.group(2)))
    sequence = longest.group(2)
    chars_per_token = len(sequence) / max(len(tokenizer(sequence, add_special_tokens=False)["input_ids"]), 1)
    keep = len(sequence) - math.ceil(excess_tokens * chars_per_token * 1.1) - 2
    if keep < 16:
        return None
    cut = sequence[: keep // 2] + sequence[len(sequence) - (keep - keep // 2):]
    start, end = longest.span(2)
    return question[:start] + cut + question[end:]


def _fit(question: str, answer_ids: list[int], encode: PromptEncoder, max_length: int) -> list[int] | None:
    """Prompt ids that fit next to the answer within max_length (shortened if needed), or None."""
    for _ in range(MAX_SHORTEN_ROUNDS):
        prompt_ids = encode([question])[0]
        excess = len(prompt_ids) + len(answer_ids) - max_length
        if excess <= 0:
            return prompt_ids
        question = shorten_longest_sequence(question, excess, encode.tokenizer)
        if question is None:
            return None
    return None


def fit_prompt(question: str, encode: PromptEncoder, max_length: int) -> tuple[list[int], str]:
    """Evaluation's prompt ids under training's rule (`_fit`, no answer yet): "whole", "shortened" or, when
    no tagged sequence can absorb the excess, "too_long" with the prompt kept whole (a test example is scored)."""
    whole = encode([question])[0]
    if len(whole) <= max_length:
        return whole, "whole"
    fitted = _fit(question, [], encode, max_length)
    return (whole, "too_long") if fitted is None else (fitted, "shortened")


def length_stats(lengths: array) -> dict[str, int]:
    """Token-length percentiles of the examples (before any shortening), to choose max_length from."""
    ordered, n = sorted(lengths), len(lengths)
    if not n:
        return {"n": 0}
    quantiles = {f"p{round(q * 100)}": ordered[min(n - 1, int(q * n))] for q in (0.5, 0.9, 0.95, 0.99)}
    return {"n": n, **quantiles, "max": ordered[-1]}


def auto_max_length(stats: dict[str, int], multiple: int = 128, cap: int = 4096) -> int:
    """The smallest multiple of 128 holding 99% of the examples whole (the rest are shortened)."""
    return min(cap, max(multiple, math.ceil(stats["p99"] / multiple) * multiple))


def chat_examples(
    path: str | Path, tokenizer: PreTrainedTokenizerBase, config: TrainConfig, report: DataReport, meta: dict,
    records: Iterator[dict] | None = None,
) -> Iterator[Example]:
    """Tokenised examples: loss on the answer tokens and the end-of-turn token only.

    Fills `meta["task_summary"]` (per task: count, label type, range or classes) for the evaluator.
    """
    eot = end_of_turn_id(tokenizer)
    encode = PromptEncoder(tokenizer, config.system_prompt)
    summaries: dict[str, LabelSummary] = {}
    lengths = array("I")
    records = records if records is not None else read_instructions(path, report, config.on_bad_line)
    while batch := list(islice(records, TOKENIZE_BATCH)):
        questions = [with_task_prefix(r, config.task_prefix_fraction, config.seed) for r in batch]
        encoded_prompts = encode(questions)
        answers = tokenizer([r["output"].strip() for r in batch], add_special_tokens=False)["input_ids"]
        for record, question, prompt_ids, answer in zip(batch, questions, encoded_prompts, answers, strict=True):
            answer_ids = [*answer, eot]
            lengths.append(len(prompt_ids) + len(answer_ids))
            if lengths[-1] > config.max_length:
                report.notes[f"examples longer than max_length={config.max_length}"] += 1
                prompt_ids = _fit(question, answer_ids, encode, config.max_length)
                if prompt_ids is None:
                    report.drop(record["line"], f"longer than max_length={config.max_length} even after shortening",
                                record["task"])
                    continue
                report.notes["examples shortened in the middle of their longest sequence"] += 1
            summary = summaries.setdefault(record["task"], LabelSummary(record["task"]))
            try:
                summary.add(record["label"], record["input"])
            except ValueError as err:  # a label of another kind than the task's earlier ones
                if config.on_bad_line == "stop":
                    raise DataError(f"{path}:{record['line']}: {err}. Fix the label, or pass --set "
                                    "on_bad_line=skip to skip such lines with a report.") from None
                report.drop(record["line"], "label of another type than the task's other labels", record["task"])
                continue
            yield [*prompt_ids, *answer_ids], [IGNORE] * len(prompt_ids) + answer_ids
    meta["task_summary"] = {task: s.to_dict() for task, s in sorted(summaries.items())}
    meta["token_lengths"] = length_stats(lengths)


def reasoning_records(path: str | Path, report: DataReport, config: TrainConfig) -> list[dict]:
    """Stage 3 records whose output is `<reasoning>…</reasoning> <answer>…</answer>`; others per the config."""
    kept = []
    for record in read_instructions(path, report, config.on_bad_line):
        if not has_wellformed_reasoning(record["output"]):
            if config.on_bad_reasoning == "stop":
                raise DataError(f"{path}:{record['line']}: output lacks well-formed <reasoning>…</reasoning> "
                                "<answer>…</answer> tags; fix it or pass --set on_bad_reasoning=skip|keep")
            if config.on_bad_reasoning == "skip":
                report.drop(record["line"], "output lacks well-formed <reasoning>/<answer> tags", record["task"])
                continue
            report.notes["outputs without well-formed reasoning/answer tags, kept"] += 1
        kept.append(record)
    return kept  # a file where every line was dropped already raised (no valid example)


def sample_replay(path: str | Path, count: int, report: DataReport, config: TrainConfig) -> list[dict]:
    """`count` records drawn uniformly from a (possibly huge) Stage 2 file in one pass (reservoir sampling)."""
    rng = random.Random(config.seed)
    reservoir: list[dict] = []
    for seen, record in enumerate(read_instructions(path, report, config.on_bad_line)):
        if seen < count:
            reservoir.append(record)
        elif (slot := rng.randrange(seen + 1)) < count:
            reservoir[slot] = record
    for record in reservoir:  # keep line numbers distinct from the reasoning file's in reports
        record["line"] = f"replay:{record['line']}"
    return reservoir
