"""The stage registry: what each training stage changes, as data. Shared code asks the stage, never its number.

A stage is one file, `omics/stageN/train.py`, that states its `Stage` (how a data file becomes examples, where
it starts from, how it is evaluated) and registers it, plus its module's line in STAGE_MODULES. The CLI builds
`omics stageN train|evaluate` from the registry, so nothing here (nor in a stage file's top level) imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from omics import paths

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from omics.config import TrainConfig
    from omics.data.packing import Example
    from omics.data.validate import DataReport
    from omics.model_card import ModelCard

# the registry: one line per stage file
STAGE_MODULES = ("omics.stage1.train", "omics.stage2.train", "omics.stage3.train", "omics.dpo.train",
                 "omics.grpo.train")
DIRECT_ANSWER_TOKENS = 64  # a direct answer's budget (Stage 2's answers are one sentence)
ANSWER_TAGS = {"reasoning": ["<reasoning>", "</reasoning>"], "answer": ["<answer>", "</answer>"]}

ExampleBuilder = Callable[[Path, "PreTrainedTokenizerBase", "TrainConfig", "DataReport", dict], "Iterator[Example]"]


@dataclass(frozen=True)
class ExtraData:
    """A data file a stage reads besides --data, given as `--NAME-data` (e.g. Stage 3's --replay-data)."""

    name: str
    help: str


@dataclass(frozen=True)
class Stage:
    """One training stage: what differs between stages, and nothing the shared trainer or evaluator does."""

    number: int  # orders the stages (preference stages come after the instruction stages)
    summary: str  # one line for --help
    chat: bool  # examples in the Llama-3 chat format (the saved model carries the chat template)
    examples: ExampleBuilder  # data file → token ids and labels; imports its own heavy modules
    starts_from: Path | str | tuple[str, ...]  # the default --base-model: a folder, or the stage whose model it
    # continues, or several stages: the model of the first one trained (e.g. ("stage3", "stage2"))
    missing_base_hint: str  # what to do when that model is not there
    evaluation: Literal["likelihood", "generation"]  # held-out bits per residue, or answers generated and scored
    modes: tuple[str, ...] = ("direct",)  # how it is asked, the default first: "direct" (the whole answer is
    # parsed) or "reasoning" (the reasoning prompt; answers read inside <answer>…</answer>, format compliance)
    max_new_tokens: int = DIRECT_ANSWER_TOKENS  # evaluation's default answer budget in the default mode
    extra_data: tuple[ExtraData, ...] = ()
    name: str = ""  # the command and the default folders' name (archive/models/NAME, configs/NAME.yaml);
    # default "stageN"; a stage outside the paper's three has its own ("dpo")
    title: str = ""  # how help and reports name it; default "Stage N"
    trainer: Callable[..., dict] | None = None  # its own training loop, (stage, omics.train.RunArgs) -> run summary
    # (e.g. TRL's DPO), importing its heavy modules when called; None: the shared SFT trainer, omics.train.train
    modes_from_model: bool = False  # trains either kind of model (DPO): a reasoning model (its omics_model.json
    # has answer tags) is evaluated in the reasoning stage's modes, any other in this stage's

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name or f"stage{self.number}")
        object.__setattr__(self, "title", self.title or f"Stage {self.number}")

    @property
    def base_model(self) -> Path:
        """The default --base-model (under --root for a stage's model, read when the parser is built)."""
        if isinstance(self.starts_from, Path):
            return self.starts_from
        names = (self.starts_from,) if isinstance(self.starts_from, str) else self.starts_from
        trained = [paths.model_dir(name) for name in names if (paths.model_dir(name) / "config.json").is_file()]
        return trained[0] if trained else paths.model_dir(names[0])

    @property
    def config(self) -> Path:
        return paths.default_config(self.name)

    @property
    def model_dir(self) -> Path:
        return paths.model_dir(self.name)

    @property
    def metrics_dir(self) -> Path:
        return paths.metrics_dir(self.name)

    @property
    def reasoning(self) -> bool:
        """Trains the reasoning format (and is evaluated in reasoning mode by default)."""
        return "reasoning" in self.modes

    def evaluated_as(self, card: ModelCard | None) -> Stage:
        """This stage as its model is evaluated: with `modes_from_model`, a reasoning model's card gives it the
        reasoning stage's modes and answer budget."""
        if not (self.modes_from_model and card is not None and card.reasoning):
            return self
        reasoning = next(s for s in registered().values() if s.reasoning)
        return replace(self, modes=reasoning.modes, max_new_tokens=reasoning.max_new_tokens)

    def answer_tags(self) -> dict[str, list[str]] | None:
        """The output format a reasoning stage trains, as recorded in its model folder."""
        return ANSWER_TAGS if self.reasoning else None


STAGES: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add (or replace, e.g. when a stage file runs as __main__ and is imported again) a stage."""
    STAGES[stage.name] = stage
    return stage


def registered() -> dict[str, Stage]:
    """Every stage, in order, its file imported (cheap: stage files import their heavy code lazily)."""
    for module in STAGE_MODULES:
        importlib.import_module(module)
    return dict(sorted(STAGES.items(), key=lambda item: item[1].number))


def stage(name: str) -> Stage:
    return registered()[name]
