"""What the teacher is asked, and whether its reply is kept.

The teacher writes `<reasoning>…</reasoning> <answer>…</answer>`; the line kept is its reasoning followed by the
dataset's own output as the answer, so the answer trained on is exactly the dataset's. The teacher's answer block
is still read: when it does not parse back to the label (the evaluation parser), the reasoning led elsewhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from omics.answers import has_wellformed_reasoning
from omics.errors import UserError
from omics.evaluate.parse import normalize_label
from omics.evaluate.scoring import reference_check
from omics.stages import ANSWER_TAGS
from omics.tasktypes import TaskSpec

PLACEHOLDERS = ("input", "output", "label", "task")  # {input}: the question, {output}: its known answer
REQUIRED = ("input", "output")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
DEFAULT_TEMPLATE = """\
You are an expert in molecular biology. Below are a question about biological sequences and its correct answer.
Write the reasoning an expert would follow to reach this answer from the question alone: what the sequence shows,
which features, rules or biological knowledge matter, and how they lead to the conclusion.

Rules:
- Reason as if you were solving the question yourself. Never say or hint that the answer was given, provided or
  known in advance.
- Explain why the answer follows; do not merely restate it.
- Reply with exactly these two blocks and nothing before or after them:
<reasoning>your step-by-step reasoning</reasoning> <answer>the answer, as written below</answer>

Question:
{input}

Answer:
{output}
"""
MIN_NEW_WORDS = 5  # reasoning with fewer words than this beyond the answer's own only restates it
_WORD = re.compile(r"[a-z0-9]+(?:[.%][a-z0-9]+)*")
_EMPTY_REASONING = re.compile(r"<reasoning>\s*</reasoning>", re.I)
# phrases that give away that the answer was shown to the teacher
LEAK = re.compile(
    r"\b(?:(?:given|provided|supplied|stated|known|expected|reference|target)\s+answer"
    r"|answer\s+(?:was|is|has\s+been|had\s+been)\s+(?:given|provided|supplied|stated|told|known)"
    r"|(?:we|i)\s+(?:were|was|are|am|have\s+been)\s+(?:told|given|provided)\s+(?:that\s+)?(?:the\s+)?answer"
    r"|you\s+(?:told|gave|provided|said)"
    r"|(?:stated|provided|indicated|given)\s+in\s+the\s+(?:prompt|answer))\b",
    re.I,
)
FEEDBACK = {  # reason → what the teacher is told before it tries again
    "malformed tags": "reply with exactly <reasoning>…</reasoning> <answer>…</answer>, each tag once, nothing "
                      "before or after them",
    "cut off at max_tokens": "the reply was cut off before it ended; write a shorter reasoning and close both blocks",
    "empty reasoning": "the <reasoning> block is empty; write the reasoning that leads to the answer",
    "restates the answer": "the reasoning only restates the answer; explain step by step why it follows from the "
                           "question",
    "mentions that the answer was given": "the reasoning says or hints that the answer was given; reason as if "
                                          "you found it yourself, without mentioning it",
    "answer does not match the label": "the <answer> block does not state the answer given above; end with "
                                       "exactly that answer",
}


def _braced(names) -> str:
    return ", ".join(f"{{{name}}}" for name in names)


def load_template(path: Path | None) -> str:
    """The prompt: DEFAULT_TEMPLATE, or a file using the same {placeholders}; other braces are left as written."""
    if path is None:
        return DEFAULT_TEMPLATE
    template = path.read_text(encoding="utf-8")
    names = set(PLACEHOLDER.findall(template))
    if unknown := sorted(names - set(PLACEHOLDERS)):
        raise UserError(f"{path}: unknown placeholder(s) {_braced(unknown)}; a template may use "
                        f"{_braced(PLACEHOLDERS)}")
    if missing := [n for n in REQUIRED if n not in names]:
        raise UserError(f"{path}: the template lacks {_braced(missing)}: the teacher must see the question "
                        "({input}) and its answer ({output})")
    return template


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render(template: str, record: dict) -> str:
    """The template with each placeholder replaced by the record's field (a non-string label as JSON)."""
    return PLACEHOLDER.sub(lambda m: _text(record[m.group(1)]) if m.group(1) in PLACEHOLDERS else m.group(0), template)


def feedback(reason: str, detail: str) -> str:
    """The user turn appended after a rejected reply: why, and what to do."""
    return f"Your reply was not accepted ({reason}: {detail}): {FEEDBACK[reason]}. Write the whole reply again."


def reasoning_line(record: dict, reasoning: str) -> dict:
    """The Stage 3 line: the teacher's reasoning, the dataset's own output as the answer, its label and task."""
    (opening, closing), (answer_open, answer_close) = ANSWER_TAGS["reasoning"], ANSWER_TAGS["answer"]
    output = f"{opening}{reasoning}{closing} {answer_open}{record['output']}{answer_close}"
    return {"input": record["input"], "output": output, "label": record["label"], "task": record["task"]}


def original_output(line: dict) -> str:
    """The dataset output a written line was made from (its answer block holds it verbatim: see `unusable`)."""
    answer_open, answer_close = ANSWER_TAGS["answer"]
    return line["output"].rsplit(answer_open, 1)[1].removesuffix(answer_close)


def unusable(record: dict, spec: TaskSpec | None) -> tuple[str, str] | None:
    """(reason, detail) when no reply could make a line of this record: its output already carries tags, or it
    does not parse back to its own label, so the line's answer block would not either."""
    if any(tag in record["output"].lower() for tags in ANSWER_TAGS.values() for tag in tags):
        return "output already has reasoning/answer tags", "is --data Stage 3 data? pass the Stage 2 file"
    if spec is None:
        return "label does not fit its task", "its task's labels contradict each other (see the data report)"
    try:
        parsed = reference_check(record["output"], normalize_label(record["label"], spec), spec, reasoning=False)
    except (ValueError, TypeError, KeyError) as err:
        return "label does not fit its task", str(err)
    if parsed is not True:
        return "output does not parse back to its label", f"read as {parsed!r}, label {record['label']!r}"
    return None


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def check_reply(reply: str, finished: bool, record: dict, spec: TaskSpec) -> tuple[str, str] | None:
    """(reason, detail) when the reply is not kept, else None. `finished`: it ended by itself, not at max_tokens."""
    if not finished:
        return "cut off at max_tokens", "the reply reached the token limit"
    if _EMPTY_REASONING.search(reply):
        return "empty reasoning", "nothing inside <reasoning>…</reasoning>"
    if not has_wellformed_reasoning(reply):
        return "malformed tags", "expected <reasoning>…</reasoning> <answer>…</answer> and nothing else"
    reasoning = reasoning_text(reply)
    if leak := LEAK.search(reasoning):
        return "mentions that the answer was given", f"{leak.group(0)!r}"
    if len(_words(reasoning) - _words(record["output"])) < MIN_NEW_WORDS:
        return "restates the answer", f"fewer than {MIN_NEW_WORDS} words beyond the answer's own"
    parsed = reference_check(reply, normalize_label(record["label"], spec), spec, reasoning=True)
    if parsed is not True:
        return "answer does not match the label", f"the answer block reads as {parsed!r}, not {record['label']!r}"
    return None


def reasoning_text(reply: str) -> str:
    """The content of a well-formed reply's reasoning block."""
    opening, closing = ANSWER_TAGS["reasoning"]
    lower = reply.lower()
    return reply[lower.index(opening) + len(opening): lower.index(closing)].strip()
