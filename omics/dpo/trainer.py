"""DPO training: TRL's DPOTrainer inside the shared run (folders and locks, overwrite safety, checkpoints and
resume, parameters.json / run_summary.json, TensorBoard, the merged model with its omics_model.json).

With LoRA (the default) TRL wraps the base model itself and computes the reference log-probabilities with the
adapter disabled: one copy of the weights in memory, so 8B fits one 48 GB GPU. Full fine-tuning loads a
second, frozen copy as the reference.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from omics.config import TrainConfig
from omics.data.pairs import conversation, read_pairs
from omics.data.validate import DataReport
from omics.io import write_json
from omics.model import (
    load_model,
    load_tokenizer,
    lora_config,
    prepare_for_training,
    save_trained,
    trained_in_fp32,
)
from omics.model_card import ModelCard, read_card
from omics.runs import Run
from omics.stages import Stage
from omics.train import (
    CardInCheckpoints,
    OmicsOptimizer,
    RunArgs,
    StopIfFinished,
    best_metric,
    check_schedule,
    checked_start,
    finish_run,
    held,
    last_checkpoint,
    model_card,
    reset_directories,
    tensorboard_callback,
    train_or_restore,
    training_settings,
    write_parameters,
)

log = logging.getLogger("omics")
REWARDS = ("rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected", "loss")


class OmicsDPOTrainer(OmicsOptimizer, DPOTrainer):
    """TRL's DPO loss and reward metrics, with our optimizers (LoRA+ groups, 8-bit AdamW, update in backward)."""


def pair_dataset(path: Path, report: DataReport, config: TrainConfig, system: str) -> Dataset:
    """The valid pairs of `path` in TRL's conversational form (bad lines skipped and reported, or refused)."""
    dataset = Dataset.from_list([conversation(r, system) for r in read_pairs(path, report, config.on_bad_line)])
    log.info("%s", report.summary())
    return dataset


def preference_card(stage: Stage, args: RunArgs, base: Path, config: TrainConfig, inherited: ModelCard
                    ) -> ModelCard:
    """The run's card with what the model keeps of its base: prompts, answer format, training label summary."""
    return replace(model_card(stage, args, base, config, {"task_summary": inherited.tasks}),
                   answer_tags=inherited.answer_tags)


def reward_curve(log_history: list[dict]) -> dict[str, dict[str, float]]:
    """First and last logged value of each reward metric (what the README and the note quote)."""
    curve = {}
    for key in REWARDS:
        values = [entry[key] for entry in log_history if key in entry]
        if values:
            curve[key] = {"first": values[0], "last": values[-1]}
    return curve


@held
def train(stage: Stage, args: RunArgs, run: Run) -> dict[str, Any]:
    """DPO end to end, returning its run summary."""
    started = time.time()
    config, base = checked_start(stage, args)
    check_schedule(stage, config, args.eval_data is not None)
    inherited = read_card(base)  # the base's prompts: the pairs are asked as the model is used
    config.system_prompt, config.reasoning_system_prompt = inherited.system_prompt, inherited.reasoning_prompt
    tokenizer = load_tokenizer(base, chat=True, system_prompt=inherited.system_prompt)
    report = DataReport(str(args.data))
    train_set = pair_dataset(args.data, report, config, inherited.default_prompt)
    eval_set = pair_dataset(args.eval_data, DataReport(str(args.eval_data)), config, inherited.default_prompt) \
        if args.eval_data else None
    checkpoints = reset_directories(args, run)
    write_json(args.metrics_dir / "data_report.json", report.to_dict())
    torch.manual_seed(config.seed)
    model = load_model(base, config.attn_implementation, config.dtype)
    if config.finetune == "full":  # LoRA: TRL wraps the model itself, so that the reference is the adapter off
        model = prepare_for_training(model, tokenizer, replace(config, gradient_checkpointing=False))
    card = preference_card(stage, args, base, config, inherited)
    trainer = OmicsDPOTrainer(
        model=model,
        ref_model=None,
        args=DPOConfig(**{
            **training_settings(config, checkpoints, eval_set is not None,
                                best_metric(stage, config, eval_set is not None)),
            "beta": config.dpo_beta,
            "max_length": config.max_length or None,
            "gradient_checkpointing": config.gradient_checkpointing,
            "gradient_checkpointing_kwargs": {"use_reentrant": False},
            "use_liger_kernel": False,  # TRL computes the log-probabilities through its own chunked LM head
        }),
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=lora_config(tokenizer, config) if config.finetune == "lora" else None,
        callbacks=[StopIfFinished(), tensorboard_callback(args.metrics_dir), CardInCheckpoints(card)],
        train_config=config,
    )
    if config.finetune == "lora":
        trained_in_fp32(trainer.model)
    if (dropped := len(train_set) - len(trainer.train_dataset)) > 0:
        log.warning("%d pairs left out: their prompt alone fills max_length=%d (raise max_length)", dropped,
                    config.max_length)
    write_parameters(stage, args, config, base, trainer.model, pairs=len(trainer.train_dataset))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = train_or_restore(trainer, last_checkpoint(checkpoints) if args.resume else None)
    save_trained(trainer.model, tokenizer, args.output_dir, card=card)
    return finish_run(stage, args, config, trainer, result, started, {
        "pairs": len(trainer.train_dataset), "rewards": reward_curve(trainer.state.log_history)})
