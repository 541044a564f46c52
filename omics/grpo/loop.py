"""GRPO's training loop: TRL's GRPOTrainer inside omics' run (folders, locks, resume, records, model folder).

Prompts are the base model's chat format with the system prompt its omics_model.json records (the reasoning prompt
for a reasoning model); each answer is rewarded by omics.rewards against the line's label, and each task's reward
mean and spread is logged next to TRL's own metrics (reward, reward_std, kl, completions/mean_length, …).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from omics.compat import drop_reference_copy
from omics.config import TrainConfig
from omics.data.labels import consistent_labels, label_kinds_kept
from omics.data.validate import DataReport, read_instructions
from omics.device import has_package, use_cuda
from omics.errors import UserError
from omics.evaluate.tasks import build_task_specs
from omics.io import write_json
from omics.model import load_model, load_tokenizer, prepare_for_training, save_trained
from omics.model_card import ModelCard, read_card
from omics.rewards import answer_reward, format_reward
from omics.runs import Run
from omics.stages import DIRECT_ANSWER_TOKENS, Stage
from omics.tasktypes import TaskSpec
from omics.train import (
    CardInCheckpoints,
    OmicsOptimizer,
    RunArgs,
    StopIfFinished,
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
REASONING_COMPLETION_TOKENS = 256  # max_completion_length 0 for a reasoning base: room for a short reasoning


def prompt_records(path: Path, config: TrainConfig, report: DataReport) -> tuple[list[dict], dict[str, dict]]:
    """The file's records as Stage 2 validates them (bad lines and labels their task contradicts reported by
    line, or refused with on_bad_line=stop; tasks whose labels make no task type left out), and their per-task
    label summary (the regression ranges the rewards are graded on)."""
    kept, unusable = label_kinds_kept(read_instructions(path, DataReport(str(path)), config.on_bad_line))
    summaries: dict = {}
    records = []
    for record in consistent_labels(read_instructions(path, report, config.on_bad_line), kept, summaries, path,
                                    config, report):
        if record["task"] in unusable:
            report.drop(record["line"], f"task {record['task']}: {unusable[record['task']]}", record["task"])
        else:
            records.append(record)
    if not records:
        raise UserError(f"{path}: no usable examples to train on ({report.summary()})")
    return records, {task: s.to_dict() for task, s in sorted(summaries.items()) if task not in unusable}


def prompts(records: list[dict], system: str) -> Dataset:
    """TRL's conversational prompts (rendered by the model's chat template) with the columns rewards read; labels
    as JSON text (a column holds one type, labels have several)."""
    return Dataset.from_list([{"prompt": [{"role": "system", "content": system},
                                          {"role": "user", "content": r["input"]}],
                               "task": r["task"], "label": json.dumps(r["label"])} for r in records])


class TaskRewards:
    """TRL reward functions computed by omics.rewards, each logging its mean and spread per task."""

    def __init__(self, specs: dict[str, TaskSpec], reasoning: bool):
        self.specs, self.reasoning = specs, reasoning

    def correctness(self, completions: list, task: list[str], label: list[str], log_metric=None, **_) -> list[float]:
        rewards = [answer_reward(c[-1]["content"], json.loads(lab), self.specs[t], self.reasoning)
                   for c, t, lab in zip(completions, task, label, strict=True)]
        self._log_per_task("correctness", rewards, task, log_metric)
        return rewards

    def format(self, completions: list, task: list[str], log_metric=None, **_) -> list[float]:
        rewards = [format_reward(c[-1]["content"]) for c in completions]
        self._log_per_task("format", rewards, task, log_metric)
        return rewards

    @staticmethod
    def _log_per_task(name: str, rewards: list[float], tasks: list[str], log_metric) -> None:
        """`rewards_per_task/<task>/<name>_mean|_std` of this batch (TRL averages them over a logging window)."""
        by_task: dict[str, list[float]] = defaultdict(list)
        for reward, task in zip(rewards, tasks, strict=True):
            by_task[task].append(reward)
        for task, values in by_task.items():
            log_metric(f"rewards_per_task/{task}/{name}_mean", statistics.fmean(values))
            log_metric(f"rewards_per_task/{task}/{name}_std", statistics.pstdev(values))


class OmicsGRPOTrainer(OmicsOptimizer, GRPOTrainer):
    """TRL's GRPO trainer with our optimizers (LoRA+ groups, 8-bit AdamW)."""


def grpo_arguments(config: TrainConfig, checkpoints: Path, has_eval: bool, reasoning: bool) -> GRPOConfig:
    """The shared training arguments plus GRPO's: group size, answer length, KL weight, the reward weights."""
    completion = config.max_completion_length or (REASONING_COMPLETION_TOKENS if reasoning else DIRECT_ANSWER_TOKENS)
    vllm = use_cuda() and has_package("vllm")  # colocated with training on the one GPU
    return GRPOConfig(
        **training_settings(config, checkpoints, has_eval), num_generations=config.num_generations,
        max_completion_length=completion, temperature=config.temperature, beta=config.grpo_beta,
        reward_weights=[1.0, config.format_reward_weight] if reasoning else [1.0],
        use_vllm=vllm, **({"vllm_mode": "colocate", "vllm_gpu_memory_utilization": config.vllm_memory_share}
                          if vllm else {}))


def label_summary(base_card: ModelCard, train_summary: dict[str, dict]) -> dict[str, dict]:
    """The label summary rewards and evaluation read: the base's for every task it was trained on (its training
    file is the full one; a GRPO file is often a small part of it, whose ranges and classes would change the
    rules), this run's for tasks new to it."""
    return {**train_summary, **(base_card.tasks or {})}


def grpo_card(card: ModelCard, base_card: ModelCard, summary: dict[str, dict]) -> ModelCard:
    """The trained model speaks its base's format: its system prompt and answer tags, and keeps its label rules."""
    return replace(card, system_prompt=base_card.system_prompt, answer_tags=base_card.answer_tags,
                   reasoning_prompt=base_card.reasoning_prompt, tasks=summary)


@held
def train(stage: Stage, args: RunArgs, run: Run) -> dict[str, Any]:
    """`omics grpo train` end to end, returning its run summary."""
    started = time.time()
    config, base = checked_start(stage, args)
    if (answers := config.micro_batch_size * config.grad_accum) % config.num_generations:
        raise UserError(f"micro_batch_size x grad_accum ({answers} answers a step) must be a multiple of "
                        f"num_generations ({config.num_generations}): a step answers whole groups of one question; "
                        "change one with --set")
    base_card = read_card(base)
    report = DataReport(str(args.data))
    records, task_summary = prompt_records(args.data, config, report)
    log.info("data: %s", report.summary())
    eval_records = [] if args.eval_data is None else prompt_records(args.eval_data, config,
                                                                    DataReport(str(args.eval_data)))[0]
    summary = label_summary(base_card, task_summary)
    specs = build_task_specs(summary)
    if missing := sorted({r["task"] for r in eval_records} - set(specs)):
        raise UserError(f"{args.eval_data}: tasks {missing} are not in --data {args.data}: their rewards need the "
                        "training labels (ranges, classes); add examples of them to --data or leave them out")
    tokenizer = load_tokenizer(base, chat=True)  # the base's system prompt as the template's default
    system = base_card.default_prompt
    checkpoints = reset_directories(args, run)
    write_json(args.metrics_dir / "data_report.json", {"report": report.to_dict(), "summary": report.summary(),
                                                        "task_summary": task_summary})
    torch.manual_seed(config.seed)
    model = prepare_for_training(load_model(base, config.attn_implementation, config.dtype), tokenizer, config)
    write_parameters(stage, args, config, base, model, system_prompt=system, reasoning=base_card.reasoning)
    card = grpo_card(model_card(stage, args, base, config, {}), base_card, summary)
    rewards = TaskRewards(specs, base_card.reasoning)
    trainer = OmicsGRPOTrainer(
        model=model,
        reward_funcs=[rewards.correctness, rewards.format] if base_card.reasoning else [rewards.correctness],
        args=grpo_arguments(config, checkpoints, bool(eval_records), base_card.reasoning),
        train_dataset=prompts(records, system),
        eval_dataset=prompts(eval_records, system) if eval_records else None,
        processing_class=tokenizer,
        callbacks=[StopIfFinished(), tensorboard_callback(args.metrics_dir), CardInCheckpoints(card)],
        train_config=config,
    )
    drop_reference_copy(trainer.model)
    if use_cuda():
        torch.cuda.reset_peak_memory_stats()
    result = train_or_restore(trainer, last_checkpoint(checkpoints) if args.resume else None)
    save_trained(trainer.model, tokenizer, args.output_dir, card=card)
    return finish_run(stage, args, config, trainer, result, started, {"reasoning": base_card.reasoning})
