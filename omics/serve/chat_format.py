"""What a served model is prompted with: its chat template and the system prompt a request without one gets.

Decided once per server and the same for both backends (vLLM is handed the same template), so one model folder
answers alike behind either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omics.config import SYSTEM_PROMPT
from omics.errors import UserError
from omics.model_card import CARD, find_card

log = logging.getLogger("omics")
MODES = ("reasoning", "direct")


@dataclass(frozen=True)
class ChatFormat:
    """`template` None: the tokenizer's own; `system_prompt`: the default system turn it carries (None: unknown)."""

    template: str | None
    system_prompt: str | None
    described: str  # for the start-up log


def chat_format(model_dir: Path, mode: str | None) -> ChatFormat:
    """An omics model: Llama-3.1's format with the prompt it was trained with (a reasoning model: its reasoning
    prompt, unless `mode` is direct). A folder omics did not save: the tokenizer's own template, said in the log."""
    from omics.model import CHAT_TEMPLATE, chat_template, has_chat_template  # torch: only when a server starts

    card = find_card(model_dir)
    if card is None:
        if mode is not None:
            raise UserError(f"--mode {mode}: {model_dir} has no {CARD}, so its modes are unknown; drop --mode")
        if has_chat_template(model_dir):
            log.warning("%s has no %s (not saved by omics): using the tokenizer's own chat template and its own "
                        "default system prompt", model_dir, CARD)
            return ChatFormat(None, None, "the tokenizer's own chat template")
        log.warning("%s has no %s and no chat template: using Llama-3.1's chat format with the paper's system "
                    "prompt", model_dir, CARD)
        return ChatFormat(CHAT_TEMPLATE, SYSTEM_PROMPT, "Llama-3.1 chat format, the paper's system prompt")
    if mode == "reasoning" and not card.reasoning:
        raise UserError(f"--mode reasoning: {model_dir} was not trained to reason ({CARD} has no answer_tags); "
                        "drop --mode")
    prompt = card.system_prompt if mode == "direct" else card.default_prompt
    kind = "reasoning" if prompt == card.reasoning_prompt and card.reasoning else "direct"
    return ChatFormat(chat_template(prompt), prompt, f"Llama-3.1 chat format, the model's {kind} system prompt")
