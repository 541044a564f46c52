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
from itertools import accumulate

from transformers import PreTrainedTokenizerBase

from omics.evaluate.generate import Generation
from omics.tasktypes import TaskSpec


def true_class_probability(
    generation: Generation, spec: TaskSpec, label: object, prediction: object, tokenizer: PreTrainedTokenizerBase,
    answer_tag: bool = False,
) -> float | None:
    """p(true class) at the deciding token, or None when the answer has no clean class word to read it from.

    The deciding token is the first token of the first class word (whole word, any case) in the answer; with
    `answer_tag` (Stage 3) the search starts inside the last `<answer>` block, the one the prediction was
    parsed from (an output without the tag is read whole, like its prediction). `p` is the probability of the
    true class word's first token there, spelled with the same leading whitespace. No reading when the word
    starts inside a token, when the wording decided otherwise ("not positive"), or when a wrong class shares
    its first token with the true one (the difference comes later: this token cannot tell them apart).
    """
    words = spec.task_type.class_words(spec)
    if not words or prediction is None or not generation.top_logprobs:
        return None
    pieces = [tokenizer.decode([token]) for token in generation.token_ids]
    text = "".join(pieces)
    begin = text.rfind("<answer>") + len("<answer>") if answer_tag and "<answer>" in text else 0
    names = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    match = re.compile(rf"(?<![A-Za-z0-9_])({names})(?![A-Za-z0-9_])", re.IGNORECASE).search(text, begin)
    if match is None:
        return None
    spelled = next(w for w in words if w.lower() == match.group(1).lower())
    if words[spelled] != prediction:  # decided by other wording (e.g. "not positive"): no reading
        return None
    offsets = list(accumulate(len(piece) for piece in pieces))
    step = next(i for i, end in enumerate(offsets) if end > match.start())
    leading = text[offsets[step] - len(pieces[step]):match.start()]
    if leading.strip():  # the word starts inside a token (e.g. glued to punctuation)
        return None
    first = {w: tokenizer(leading + w, add_special_tokens=False)["input_ids"][0] for w in words}
    true_firsts = {first[w] for w, value in words.items() if value == label}
    if words[spelled] != label and generation.token_ids[step] in true_firsts:
        return None
    top = generation.top_logprobs[step]
    return min(1.0, sum(math.exp(top[token]) for token in true_firsts if token in top))
