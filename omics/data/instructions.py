"""Stages 2-3 data: {input, output, label, task} records → chat-formatted examples with answer-only loss.

One function renders a prompt for training and for generation alike (`prompt_text`), through the chat
template the saved model carries, so training, HF generation, vLLM and other tools see the same tokens.
An example longer than `max_length` is shortened in the middle of its longest sequence — never by cutting
the end of the prompt, which would drop the question and the assistant header — and never dropped.
A label whose type contradicts its task's other labels is reported by line before anything is trained.
"""

from __future__ import annotations

import math
import random
import zlib
from array import array
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import TypeVar

from transformers import PreTrainedTokenizerBase

from omics.answers import has_wellformed_reasoning
from omics.config import TrainConfig
from omics.data.labels import consistent_labels, label_kinds_kept, task_warnings
from omics.data.packing import IGNORE, Example
from omics.data.validate import DataError, DataReport, read_instructions
from omics.labels import LabelSummary
from omics.model import end_of_turn_id
from omics.sequences import TAG_PATTERN

TOKENIZE_BATCH = 512
MAX_SHORTEN_ROUNDS = 4
MIN_SEQUENCE_KEPT = 16  # residues a cut sequence keeps: its two ends stay recognisable
SHORTENED = {
    "sequence": "examples shortened in the middle of their longest sequence",
    "question": "examples shortened in the middle of their question (no tagged sequence left to cut)",
    "answer": "examples shortened in the middle of their answer too (the answer alone nearly fills max_length)",
}
Cuttable = TypeVar("Cuttable", str, list[int])


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
        return [self.wrap(body) for body in self.bodies(questions)]

    def bodies(self, questions: list[str]) -> list[list[int]]:
        return self.tokenizer([q.strip() for q in questions], add_special_tokens=False)["input_ids"]

    def wrap(self, body: list[int]) -> list[int]:
        return [*self.prefix, *body, *self.suffix]


def encode_each(questions: list[str], encoders: list[PromptEncoder]) -> list[list[int]]:
    """Prompt ids of a batch whose questions each have their own system prompt: the questions tokenised in one
    call (the system turn does not change how a question tokenises), each wrapped in its own prompt's parts."""
    bodies = encoders[0].bodies(questions) if encoders else []
    return [encode.wrap(body) for encode, body in zip(encoders, bodies, strict=True)]


def with_task_prefix(record: dict, fraction: float, seed: int) -> str:
    """The paper prefixed ~30% of questions with "[Classification: task]" / "[Regression: task]"."""
    if fraction <= 0 or zlib.crc32(f"{seed}:{record['line']}".encode()) / 2**32 >= fraction:
        return record["input"]
    numeric = isinstance(record["label"], int | float | dict) and not isinstance(record["label"], bool)
    return f"[{'Regression' if numeric else 'Classification'}: {record['task']}] {record['input']}"


def cut_middle(items: Cuttable, keep: int) -> Cuttable:
    """`items` without its middle: the first and last `keep` / 2 kept."""
    return items[: keep // 2] + items[len(items) - (keep - keep // 2):]


def shorten_longest_sequence(question: str, excess_tokens: int, tokenizer: PreTrainedTokenizerBase) -> str | None:
    """Remove the middle of the longest tagged sequence, enough to drop about `excess_tokens` tokens (down to
    MIN_SEQUENCE_KEPT residues; the next round takes the next longest); None when none is longer."""
    matches = list(TAG_PATTERN.finditer(question))
    if not matches:
        return None
    longest = max(matches, key=lambda m: len(m.group(2)))
    sequence = longest.group(2)
    if len(sequence) <= MIN_SEQUENCE_KEPT:
        return None
    chars_per_token = len(sequence) / max(len(tokenizer(sequence, add_special_tokens=False)["input_ids"]), 1)
    keep = max(MIN_SEQUENCE_KEPT, len(sequence) - math.ceil(excess_tokens * chars_per_token * 1.1) - 2)
    start, end = longest.span(2)
    return question[:start] + cut_middle(sequence, keep) + question[end:]


def _fit(question: str, answer_ids: list[int], encode: PromptEncoder, max_length: int
         ) -> tuple[list[int], list[int], str]:
    """Prompt and answer ids within max_length, and what was cut: the middle of the longest tagged sequence
    (round after round), else of the question's tokens, else — an answer that alone nearly fills max_length —
    of the answer's too (half the room each). The end of the prompt and of the answer always stay."""
    prompt_ids = encode([question])[0]
    for _ in range(MAX_SHORTEN_ROUNDS + len(TAG_PATTERN.findall(question))):  # each sequence may need its turn
        if len(prompt_ids) + len(answer_ids) <= max_length:
            return prompt_ids, answer_ids, "sequence"
        shorter = shorten_longest_sequence(question, len(prompt_ids) + len(answer_ids) - max_length, encode.tokenizer)
        if shorter is None:
            break
        question, prompt_ids = shorter, encode([shorter])[0]
    if len(prompt_ids) + len(answer_ids) <= max_length:
        return prompt_ids, answer_ids, "sequence"
    head, tail = len(encode.prefix), len(encode.suffix)
    body, room = prompt_ids[head : len(prompt_ids) - tail], max_length - head - tail
    body_kept = min(len(body), max(room - len(answer_ids), room // 2))
    prompt_ids = [*encode.prefix, *cut_middle(body, body_kept), *encode.suffix]
    if body_kept + len(answer_ids) <= room:
        return prompt_ids, answer_ids, "question"
    return prompt_ids, cut_middle(answer_ids, room - body_kept), "answer"


def fit_prompt(question: str, encode: PromptEncoder, max_length: int) -> tuple[list[int], str]:
    """Evaluation's prompt ids under training's rule (`_fit`, no answer yet), and how they fit: "whole",
    "shortened" (the middle of the longest tagged sequence cut) or "question_cut" (no sequence could absorb
    the excess: the middle of the question's tokens cut, as training does)."""
    whole = encode([question])[0]
    if len(whole) <= max_length:
        return whole, "whole"
    fitted, _, cut = _fit(question, [], encode, max_length)
    return fitted, "shortened" if cut == "sequence" else "question_cut"


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
    records: Iterable[dict] | None = None,
) -> Iterator[Example]:
    """Tokenised examples: loss on the answer tokens and the end-of-turn token only.

    A first pass over the labels finds those of a type their task contradicts (`label_kinds_kept`), so the
    second leaves them out. Fills `meta["task_summary"]` (per task: count, label type, range or classes) for
    the evaluator, and the report's per-task shortening counts and warnings. A record is asked with its own
    `system` prompt if it has one (Stage 3's reasoning examples: the reasoning prompt), else the config's.
    """
    eot = end_of_turn_id(tokenizer)
    encoders: dict[str, PromptEncoder] = {}

    def encoder(system: str) -> PromptEncoder:
        if system not in encoders:
            encoders[system] = encode = PromptEncoder(tokenizer, system)
            fixed = len(encode.prefix) + len(encode.suffix)
            if config.max_length < fixed + 2:
                raise DataError(f"max_length={config.max_length} leaves no room for a question and an answer beside "
                                f"the prompt's fixed part ({fixed} tokens: system prompt and chat headers); raise "
                                "max_length")
        return encoders[system]

    encoder(config.system_prompt)
    records = None if records is None else list(records)
    kept, unusable = label_kinds_kept(records if records is not None else
                                      read_instructions(path, DataReport(str(path)), config.on_bad_line))
    summaries: dict[str, LabelSummary] = {}
    lengths = array("I")
    stream = iter(records) if records is not None else read_instructions(path, report, config.on_bad_line)
    consistent = consistent_labels(stream, kept, summaries, path, config, report)
    while batch := list(islice(consistent, TOKENIZE_BATCH)):
        questions = [with_task_prefix(r, config.task_prefix_fraction, config.seed) for r in batch]
        systems = [str(r.get("system") or config.system_prompt) for r in batch]
        encoded_prompts = encode_each(questions, [encoder(system) for system in systems])
        answers = tokenizer([r["output"].strip() for r in batch], add_special_tokens=False)["input_ids"]
        for record, question, system, prompt_ids, answer in zip(batch, questions, systems, encoded_prompts, answers,
                                                                strict=True):
            answer_ids = [*answer, eot]
            lengths.append(len(prompt_ids) + len(answer_ids))
            if lengths[-1] > config.max_length:
                report.notes[f"examples longer than max_length={config.max_length}"] += 1
                prompt_ids, answer_ids, cut = _fit(question, answer_ids, encoder(system), config.max_length)
                report.notes[SHORTENED[cut]] += 1
                report.shortened[record["task"]][cut] += 1
            yield [*prompt_ids, *answer_ids], [IGNORE] * len(prompt_ids) + answer_ids
    meta["task_summary"] = {task: s.to_dict() for task, s in sorted(summaries.items())}
    meta["token_lengths"] = length_stats(lengths)
    report.warnings += [f"{problem}: the evaluator will refuse this task" for _, problem in sorted(unusable.items())]
    if not meta.get("validation"):  # a validation file's few examples per task say nothing of training
        report.warnings += task_warnings(meta["task_summary"])


def reasoning_records(path: str | Path, report: DataReport, config: TrainConfig) -> list[dict]:
    """Stage 3 records whose output is `<reasoning>…</reasoning> <answer>…</answer>`; others per the config.
    Each is asked with the reasoning prompt (unless its row names a `system` of its own)."""
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
        record.setdefault("system", config.reasoning_system_prompt)
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
