"""The model's own probability of the true class, read from generation log-probabilities.

The classification Mixed Score uses `p` = probability of the true class (evaluation.md §3). For a greedy
answer that names a class word ("… is positive", "… is guanine"), the deciding token is the first token of
that word; `p` is the probability the model gave, at that position, to the first token of the true class's
word. When the answer decides by other wording (a negation, "yes"), or no class word was generated, there is
no such token: the caller falls back to the hard 1/0 for that sample and reports the share of each.
"""

from __future__ import annotations

import math
import re

from transformers import PreTrainedTokenizerBase

from omics.evaluate.generate import Generation
from omics.evaluate.tasks import TaskSpec, binary_mapping


def class_words(spec: TaskSpec) -> dict[str, object]:
    """Lower-case class word → the prediction value it stands for (bool for binary, name for multi-class)."""
    if spec.type == "binary":
        return {word.lower(): value for word, value in (binary_mapping(spec.classes) or {}).items()
                if re.fullmatch(r"[a-z][a-z-]*", word.lower())}
    if spec.type == "multiclass":
        return {name.lower(): name for name in spec.classes}
    return {}


def true_class_probability(
    generation: Generation, spec: TaskSpec, label: object, prediction: object, tokenizer: PreTrainedTokenizerBase,
    answer_tag: bool = False,
) -> float | None:
    """p(true class) at the deciding token, or None when the answer has no class word to read it from.

    With `answer_tag` (Stage 3), only tokens after `<answer>` are read: the reasoning may name classes too.
    An output without the tag is read whole, as its prediction was parsed (format-noncompliant fallback).
    """
    words = class_words(spec)
    if not words or prediction is None or not generation.top_logprobs:
        return None
    answer_tag = answer_tag and "<answer>" in generation.text
    pieces = [tokenizer.decode([token]) for token in generation.token_ids]
    prefix = ""
    for step, piece in enumerate(pieces):
        if answer_tag and "<answer>" not in prefix:
            prefix += piece
            continue
        rest = "".join(pieces[step:]).lower()
        at_boundary = not prefix or not prefix[-1].isalnum() or piece[:1].isspace()
        named = next((w for w in sorted(words, key=len, reverse=True)
                      if at_boundary and re.match(rf"\s*{re.escape(w)}\b", rest)), None)
        if named is not None:
            if words[named] != prediction:  # decided by other wording (e.g. "not positive"): no reading
                return None
            true_words = [w for w, value in words.items() if value == label]
            probability = sum(
                math.exp(logprob) for token, logprob in generation.top_logprobs[step].items()
                if (text := tokenizer.decode([token]).strip().lower()) and any(w.startswith(text) for w in true_words)
            )
            return min(1.0, probability)
        prefix += piece
    return None
