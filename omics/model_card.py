"""`omics_model.json`: what a saved model is, carried in its own folder (and in every checkpoint).

Evaluate, generate, chat and `score --model` read the system prompt, the training label summary, the
reasoning format and the training settings from here, never from a metrics folder, so a model folder copied
elsewhere evaluates identically. No torch: `omics score` reads it too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omics import __version__
from omics.config import REASONING_PROMPT, SYSTEM_PROMPT
from omics.errors import UserError
from omics.io import write_json

log = logging.getLogger("omics")
CARD = "omics_model.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelCard:
    """A model folder's description; `ModelCard()` is what a folder without one (an older omics, a download)
    is taken to be: the paper's system prompt, no training label summary, no recorded settings."""

    stage: str | None = None  # the stage that made the model
    base_model: dict[str, str] | None = None  # {"path", "fingerprint"} of the model it was trained from
    system_prompt: str = SYSTEM_PROMPT
    answer_tags: dict[str, list[str]] | None = None  # reasoning stages: the tags around reasoning and answer
    reasoning_prompt: str = REASONING_PROMPT  # the system prompt that asks for them (Stage 3's reasoning mode)
    tasks: dict[str, Any] | None = None  # per-task label summary of the training data (type, classes, range…)
    data: dict[str, Any] = field(default_factory=dict)  # the training files by flag: path, bytes, sha256
    config: dict[str, Any] = field(default_factory=dict)  # the resolved training config
    vocabulary: dict[str, Any] | None = None  # omics vocab build: base vocabulary size, new token ids, merges
    omics_version: str = __version__
    format_version: int = FORMAT_VERSION

    @property
    def reasoning(self) -> bool:
        return self.answer_tags is not None

    @property
    def default_prompt(self) -> str:
        """What generate and chat ask with when not told: a reasoning model reasons (its default mode)."""
        return self.reasoning_prompt if self.reasoning else self.system_prompt

    @property
    def max_length(self) -> int | None:
        """The length training shortened examples to (prompts are shortened alike), None when unknown."""
        return self.config.get("max_length") or None

    def write(self, folder: Path) -> None:
        write_json(folder / CARD, asdict(self))


def find_card(model_dir: str | Path) -> ModelCard | None:
    """The model folder's card, or None when it has none."""
    path = Path(model_dir) / CARD
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({err}); restore it from the training run or delete it") from None
    if document.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{path}: format {document['format_version']} is newer than this omics reads "
                        f"({FORMAT_VERSION}); upgrade omics")
    known = ModelCard.__dataclass_fields__
    return ModelCard(**{key: value for key, value in document.items() if key in known})


def read_card(model_dir: str | Path) -> ModelCard:
    """The model folder's card; for a folder without one, today's defaults, said once in the log."""
    card = find_card(model_dir)
    if card is None:
        log.info("%s has no %s (saved by an older omics, or not by omics): using the default system prompt "
                 "and no training label summary (pass --train-data for label ranges and class names)",
                 model_dir, CARD)
        return ModelCard()
    return card
