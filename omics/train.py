"""One training run for every stage: config → data (cached) → model → HF Trainer → merged model + records.

A stage contributes its `Stage` (omics.stages: what its data looks like, whether it speaks the chat format);
all the rest — overwrite protection, checkpoints and resume, LoRA+, logging, saving — is shared.
"""

from __future__ import annotations

import functools
import json
import logging
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.integrations import TensorBoardCallback
from transformers.trainer_utils import TrainOutput

from omics import __version__, paths
from omics.compat import attention_of, load_best_checkpoint, unwrap_optimizer
from omics.config import TrainConfig, load_config
from omics.data.packing import (
    PackedCollator,
    cache_key,
    cached_blocks,
    file_sha256,
    model_fingerprint,
    pack,
    tokenizer_fingerprint,
)
from omics.data.validate import DataReport
from omics.device import describe, liger_available, model_dtype, use_cuda
from omics.errors import UserError
from omics.io import write_json
from omics.loss import MergeCheck, answer_only_loss
from omics.model import (
    count_parameters,
    has_chat_template,
    load_model,
    load_tokenizer,
    new_vocabulary_rows,
    prepare_for_training,
    repair_untrained_rows,
    require_model_dir,
    save_trained,
)
from omics.model_card import ModelCard, find_card
from omics.optim import StepInBackward, make_optimizer
from omics.runs import Run
from omics.stages import Stage
from omics.version import git_commit

log = logging.getLogger("omics")
CACHE_VERSION = 3
# every config key that changes the tokenised data: all of them are part of the cache key
DATA_KEYS = ("max_length", "wrap_tags", "task_prefix_fraction", "system_prompt", "reasoning_system_prompt",
             "replay_ratio", "seed", "on_bad_line", "on_bad_reasoning")
CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"  # HF writes it last into a checkpoint

@dataclass
class RunArgs:
    data: Path
    base_model: Path
    output_dir: Path
    metrics_dir: Path
    config: Path
    overrides: list[str] = field(default_factory=list)
    eval_data: Path | None = None
    extra_data: dict[str, Path] = field(default_factory=dict)  # the stage's extra files by name (Stage 3's replay)
    resume: bool = False
    overwrite: bool = False
    dry_run: int | None = None  # --dry-run N: show N examples and what the run would cost, train nothing
    cache_dir: Path | None = None  # the tokenised data; None: beside the model folder (paths.cache_dir)

    def __post_init__(self) -> None:
        self.cache_dir = self.cache_dir or paths.cache_dir(self.output_dir)

    def data_files(self) -> dict[str, Path | None]:
        """What the run reads besides its base model, by command-line flag."""
        return {"--data": self.data, "--eval-data": self.eval_data,
                **{f"--{name}-data": path for name, path in self.extra_data.items()}}

    @classmethod
    def from_cli(cls, args, stage: Stage) -> RunArgs:
        extra = {e.name: path for e in stage.extra_data if (path := getattr(args, f"{e.name}_data")) is not None}
        return cls(data=args.data, eval_data=args.eval_data, base_model=args.base_model,
                   output_dir=args.output_dir, metrics_dir=args.metrics_dir, config=args.config,
                   overrides=args.overrides, extra_data=extra, resume=args.resume, overwrite=args.overwrite,
                   dry_run=getattr(args, "dry_run", None), cache_dir=args.cache_dir)


def versions() -> dict[str, str]:
    found = {}
    for name in ("omics", "torch", "transformers", "peft", "accelerate", "datasets", "trl", "liger-kernel",
                 "torchao", "flash-attn", "vllm"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    found["python"] = platform.python_version()
    return found


def file_record(path: Path) -> dict[str, Any]:
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def changed_inputs(args: RunArgs) -> list[str]:
    """The data files whose content differs from those the run being resumed recorded (none recorded: [])."""
    recorded = args.metrics_dir / "parameters.json"
    if not recorded.is_file():
        return []
    params = json.loads(recorded.read_text())
    now = args.data_files()
    then = {"--data": params.get("data"), "--eval-data": params.get("eval_data"),
            **{f"--{name}-data": record for name, record in (params.get("extra_data") or {}).items()}}
    return [flag for flag in sorted(set(now) | set(then))
            if (now.get(flag) and file_sha256(now[flag])) != ((then.get(flag) or {}).get("sha256") or None)]


RESUME_MAY_CHANGE = {"max_steps", "epochs", "save_steps", "eval_steps", "logging_steps", "save_total_limit",
                     "keep_checkpoints"}  # a resumed run may run longer and checkpoint differently: nothing else


def changed_settings(args: RunArgs) -> list[str]:
    """The config keys (config file + --set) that differ from those the run being resumed recorded: its optimizer
    and schedule come back from the checkpoint, so a changed key would be recorded but not used."""
    recorded = args.metrics_dir / "parameters.json"
    if not recorded.is_file():
        return []
    then = json.loads(recorded.read_text()).get("config") or {}
    now = load_config(args.config, args.overrides).to_dict()
    auto = {"max_length": 0}  # resolved by the run itself (then recorded as what it chose)
    return sorted(k for k, v in now.items() if k in then and then[k] != v and auto.get(k, object()) != v
                  and k not in RESUME_MAY_CHANGE)


def check_directories(args: RunArgs) -> None:
    """Refuse to overwrite a trained model, checkpoints or run records unless asked (no side effects)."""
    checkpoints = args.output_dir / CHECKPOINTS
    has_model = (args.output_dir / "config.json").is_file()
    has_checkpoints = checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
    has_records = (args.metrics_dir / "parameters.json").is_file()
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    if args.resume:
        finished = args.metrics_dir / "run_summary.json"  # written last, once the model is complete
        if finished.is_file():
            raise UserError(f"--resume: this run is finished ({finished} exists, model in {args.output_dir}); "
                            "nothing to resume. Pass --overwrite to train it again.")
        if changed := changed_inputs(args):
            raise UserError(f"--resume: {', '.join(changed)} differ from what the run being resumed trained on "
                            f"({args.metrics_dir / 'parameters.json'}); resume with the same files, or start a "
                            "new run (--overwrite or another --output-dir/--metrics-dir)")
        if changed := changed_settings(args):
            raise UserError(f"--resume: settings {', '.join(changed)} differ from the run being resumed "
                            f"({args.metrics_dir / 'parameters.json'}); a resumed run continues with its recorded "
                            "optimizer and schedule: resume with the same --config and --set, or start a new run")
        if last_checkpoint(checkpoints) is None:
            raise UserError(f"--resume: no complete checkpoint under {checkpoints}; start without --resume "
                            "(with --overwrite if a killed run left files there)")
    elif (has_model or has_checkpoints or has_records) and not args.overwrite:
        found = [str(p) for p, there in ((args.output_dir, has_model), (checkpoints, has_checkpoints),
                                         (args.metrics_dir, has_records)) if there]
        raise UserError(
            f"a previous run exists ({', '.join(found)}). Pass --resume to continue it, --overwrite to "
            "replace it, or --output-dir/--metrics-dir to keep both."
        )


def checkpoint_state(checkpoint: Path) -> dict[str, Any] | None:
    """The trainer state of a checkpoint HF finished writing (trainer_state.json comes last), else None."""
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, or cut short by the kill
        return None
    return state if f"checkpoint-{state.get('global_step')}" == checkpoint.name else None


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint: what --resume continues from."""
    steps = {c: state["global_step"] for c in checkpoints.glob("checkpoint-*") if (state := checkpoint_state(c))}
    return max(steps, key=steps.get, default=None)


def set_aside_incomplete_checkpoints(checkpoints: Path) -> list[str]:
    """A run killed while saving leaves a checkpoint without a complete trainer_state.json: move it aside so
    --resume continues from the last complete one (replacing the copy an earlier kill at that step left)."""
    moved = []
    for checkpoint in checkpoints.glob("checkpoint-*"):
        if not checkpoint_state(checkpoint):
            aside = checkpoint.with_name(f"incomplete-{checkpoint.name}")
            shutil.rmtree(aside, ignore_errors=True)
            checkpoint.rename(aside)
            moved.append(checkpoint.name)
    if moved:
        log.warning("set aside incomplete checkpoints (killed while saving): %s", moved)
    return moved


def reset_directories(args: RunArgs, run: Run) -> Path:
    """With --overwrite, set the previous run aside (only once the new data proved usable; it is deleted when
    this run completes, restored if it does not); return the checkpoints folder."""
    if args.resume:
        set_aside_incomplete_checkpoints(args.output_dir / CHECKPOINTS)
    run.begin(args.overwrite)
    return args.output_dir / CHECKPOINTS


def hold_directories(args: RunArgs) -> Run:
    """The run's two folders, locked and checked against what it reads (see omics.runs)."""
    return Run({"--output-dir": (args.output_dir, None), "--metrics-dir": (args.metrics_dir, None)},
               {"--base-model": args.base_model, "--cache-dir": args.cache_dir, **args.data_files()},
               continue_pending=args.resume)


def data_key(stage: Stage, path: Path, tokenizer, config: TrainConfig, extra: dict[str, Path]) -> str:
    """What the tokenised data depends on: file contents, tokenizer, template and the data settings."""
    return cache_key(
        version=CACHE_VERSION, stage=stage.number, data=file_sha256(path),
        extra={k: file_sha256(v) for k, v in extra.items()}, tokenizer=tokenizer_fingerprint(tokenizer.name_or_path),
        template=tokenizer.chat_template, **{k: getattr(config, k) for k in DATA_KEYS},
    )


def build_dataset(stage: Stage, path: Path, tokenizer, config: TrainConfig, extra: dict[str, Path], cache_dir: Path,
                  validation: bool = False):
    """Tokenised, packed blocks of one data file, cached by content, tokenizer and the settings that matter."""
    key = data_key(stage, path, tokenizer, config, extra)
    report = DataReport(str(path))
    meta: dict[str, Any] = {"extra": {k: str(v) for k, v in extra.items()}, "validation": validation}

    def finish() -> dict:
        return {**meta, "report": report.to_dict(), "summary": report.summary()}

    blocks, stored = cached_blocks(
        cache_dir / f"{stage.name}-{key}",
        lambda: pack(stage.examples(path, tokenizer, config, report, meta), config.max_length),
        finish,
    )
    log.info("data: %s", stored["summary"])
    for warning in stored["report"]["warnings"]:
        log.warning("data %s: %s", path.name, warning)
    return blocks, stored


def choose_max_length(stage: Stage, args: RunArgs, tokenizer, config: TrainConfig) -> int:
    """`max_length: 0` = auto: one extra tokenisation pass, then the 99th percentile rounded up to 128. The choice
    is cached like the data (max_length 0 in the key), so a second run or --resume does not tokenise again."""
    from omics.data.instructions import auto_max_length, length_stats

    key = data_key(stage, args.data, tokenizer, config, args.extra_data)
    cached = args.cache_dir / f"{stage.name}-max-length-{key}.json"
    hit = cached.is_file()
    if hit:
        choice = json.loads(cached.read_text())
    else:
        meta: dict[str, Any] = {"extra": {k: str(v) for k, v in args.extra_data.items()}}
        examples = stage.examples(args.data, tokenizer, replace(config, max_length=10**9),
                                   DataReport(str(args.data)), meta)
        lengths = [len(ids) for ids, _ in examples]
        stats = length_stats(lengths)
        chosen = auto_max_length(stats)
        choice = {"max_length": chosen, "stats": stats, "longer": sum(n > chosen for n in lengths)}
        write_json(cached, choice)
    log.info("max_length auto: %d (token lengths %s; %d examples longer get shortened)%s", choice["max_length"],
             choice["stats"], choice["longer"], f" (cached: {cached})" if hit else "")
    return choice["max_length"]


class OmicsOptimizer:
    """A Trainer mix-in (ours, or a trainer of TRL's): LoRA+ parameter groups and memory-saving optimizers."""

    def __init__(self, *args, train_config: TrainConfig, **kwargs):
        self.train_config = train_config
        super().__init__(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        inner = unwrap_optimizer(self.optimizer)
        if isinstance(inner, StepInBackward) and "grad_norm" in logs:  # no full gradient for HF to measure
            logs["grad_norm"] = float(inner.grad_norm)  # the one device read of the step's norm
        super().log(logs, start_time)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = make_optimizer(self.model, self.train_config)
        return self.optimizer


class OmicsTrainer(OmicsOptimizer, Trainer):
    """HF Trainer with our optimizers and the answer-only loss."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs.pop("skip_logits", None)
        loss = answer_only_loss(model, inputs, num_items_in_batch, fused=self.train_config.liger)
        return (loss, {"loss": loss}) if return_outputs else loss


def check_precision(config: TrainConfig) -> None:
    """fp16 training needs loss scaling, applied between backward and the optimizer step."""
    if model_dtype(config.dtype) == torch.float16 and (config.finetune == "full" or config.optimizer_in_backward):
        raise UserError("dtype fp16 (GPUs without bf16) cannot train fp16 weights (finetune: full) nor update "
                         "inside backward (loss scaling): use finetune=lora with optimizer_in_backward=false, "
                         "or --set dtype=fp32")


def best_metric(stage: Stage, config: TrainConfig, has_eval: bool) -> str | None:
    """The eval metric whose best checkpoint becomes the model (HF's names), None to keep the last step."""
    if not has_eval or config.best_model_metric == "last":
        return None
    if config.best_model_metric == "loss":
        return "eval_loss"
    if not stage.chat or stage.trainer is not None:  # Stage 1 has no answers to score, a stage with its own
        return None  # trainer (DPO) no generation check: the default keeps the last step
    if config.eval_generation_samples > 0:
        return "eval_mixed_score"  # GenerationEvalCallback adds it to each evaluation's metrics
    log.info("best_model_metric mixed_score needs generated validation answers (eval_generation_samples > 0): "
             "keeping the last step's weights")
    return None


def check_schedule(stage: Stage, config: TrainConfig, has_eval: bool) -> None:
    """Keeping the best checkpoint needs a checkpoint at every evaluation it may pick (checked before any file)."""
    if best_metric(stage, config, has_eval) and config.save_steps % config.eval_steps:
        raise UserError(f"best_model_metric={config.best_model_metric} keeps the best of the checkpoints, so "
                        f"save_steps ({config.save_steps}) must be a multiple of eval_steps ({config.eval_steps}); "
                        "change one, or --set best_model_metric=last")


def training_arguments(config: TrainConfig, checkpoints: Path, has_eval: bool,
                       best: str | None = None) -> TrainingArguments:
    return TrainingArguments(**training_settings(config, checkpoints, has_eval, best))


def training_settings(config: TrainConfig, checkpoints: Path, has_eval: bool, best: str | None = None
                      ) -> dict[str, Any]:
    """HF TrainingArguments' keywords for a config (a trainer's own arguments class, e.g. TRL's, takes them too)."""
    cuda, dtype = use_cuda(), model_dtype(config.dtype)
    return dict(
        output_dir=str(checkpoints),
        per_device_train_batch_size=config.micro_batch_size,
        per_device_eval_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": config.min_lr_ratio},
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=0.0 if config.optimizer_in_backward else config.max_grad_norm,
        bf16=dtype == torch.bfloat16,  # accelerate's autocast (CPU too) around model.forward, as the loss's own
        fp16=dtype == torch.float16,  # + loss scaling on a GPU
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.eval_steps,
        load_best_model_at_end=best is not None,  # the best checkpoint is kept (save_total_limit aside)
        metric_for_best_model=best,
        greater_is_better=best == "eval_mixed_score",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        use_cpu=not cuda,
        use_liger_kernel=liger_available(config.liger),
        include_num_input_tokens_seen="non_padding",
        dataloader_pin_memory=cuda,  # torch_compile: prepare_for_training compiles what the loss calls
        disable_tqdm=False,  # HF hides the progress bar when its logger is quiet (omics without --verbose)
    )


def model_card(stage: Stage, args: RunArgs, base: Path, config: TrainConfig, train_meta: dict) -> ModelCard:
    """What the trained model is: saved with it and with every checkpoint (omics.model_card)."""
    return ModelCard(
        stage=stage.name, base_model={"path": str(base.resolve()), "fingerprint": model_fingerprint(base)},
        system_prompt=config.system_prompt, answer_tags=stage.answer_tags(),
        reasoning_prompt=config.reasoning_system_prompt, tasks=train_meta.get("task_summary"),
        data={flag: file_record(path) for flag, path in args.data_files().items() if path},
        config=config.to_dict(), vocabulary=(find_card(base) or ModelCard()).vocabulary, omics_version=__version__)


class CardInCheckpoints(TrainerCallback):
    """Each checkpoint describes itself like the final model: a checkpoint copied out evaluates alike."""

    def __init__(self, card: ModelCard):
        self.card = card

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            self.card.write(checkpoint)


class TrainingFinished(Exception):
    """A resumed run's checkpoint is already at the last step: there is nothing left to train."""


class StopIfFinished(TrainerCallback):
    """HF saves a checkpoint when training ends; resumed from it (a run killed while its model was saved), HF
    would train one step past max_steps. Stop before: the checkpoint's weights are already the final ones."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps > 0:  # max_steps as this run computes it (max_steps or epochs)
            raise TrainingFinished


def train_or_restore(trainer: OmicsTrainer, checkpoint: Path | None) -> TrainOutput:
    """Train, continuing from `checkpoint` if given; a checkpoint at the last step only has its weights loaded
    (or the best checkpoint's, as training would have ended with)."""
    try:
        return trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except TrainingFinished:
        log.info("training had finished at step %d: saving the model from %s", trainer.state.global_step, checkpoint)
        if trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint:
            load_best_checkpoint(trainer)
        return TrainOutput(trainer.state.global_step, None, {})


def kept_checkpoint(trainer: OmicsTrainer) -> dict[str, Any]:
    """Which weights became the model: the best checkpoint by the validation metric, or the last step's."""
    state, metric = trainer.state, trainer.args.metric_for_best_model
    if not trainer.args.load_best_model_at_end or state.best_model_checkpoint is None:
        return {"step": state.global_step, "why": "last step"}
    step = int(Path(state.best_model_checkpoint).name.removeprefix("checkpoint-"))
    kept = {"step": step, "why": f"best {metric}", "value": state.best_metric, "last_step": state.global_step}
    log.info("model = checkpoint-%d (best %s %.4g over the evaluations; training ran to step %d)", step, metric,
             state.best_metric, state.global_step)
    return kept


def held(run_body: Callable[[Stage, RunArgs, Run], dict[str, Any]]) -> Callable[[Stage, RunArgs], dict[str, Any]]:
    """A training loop run end to end with its folders held throughout (one process per run folder), returning
    its run summary: every stage's `trainer`, the shared one's included."""
    @functools.wraps(run_body)
    def train(stage: Stage, args: RunArgs) -> dict[str, Any]:
        with hold_directories(args) as run:
            return run_body(stage, args, run)

    return train


def checked_start(stage: Stage, args: RunArgs) -> tuple[TrainConfig, Path]:
    """The config and base model of a run, every refusal said before any file is written."""
    config = load_config(args.config, args.overrides)
    check_precision(config)
    base = require_model_dir(args.base_model, stage.missing_base_hint)
    check_directories(args)
    return config, base


@held
def train(stage: Stage, args: RunArgs, run: Run) -> dict[str, Any]:
    started = time.time()
    config, base = checked_start(stage, args)
    check_schedule(stage, config, args.eval_data is not None)
    first_chat = stage.chat and not has_chat_template(base)
    tokenizer = load_tokenizer(base, chat=stage.chat, system_prompt=config.system_prompt)
    if config.max_length == 0:
        config.max_length = choose_max_length(stage, args, tokenizer, config)
    train_set, train_meta = build_dataset(stage, args.data, tokenizer, config, args.extra_data, args.cache_dir)
    eval_data = args.eval_data
    if stage.chat and eval_data:  # validation sized for the run: eval_max_samples, stratified by task
        from omics.evaluate.run import eval_subset

        eval_data = eval_subset(eval_data, config.eval_max_samples, args.cache_dir)
    eval_set = build_dataset(stage, eval_data, tokenizer, config, {}, args.cache_dir, validation=True)[0] \
        if eval_data else None
    checkpoints = reset_directories(args, run)
    write_json(args.metrics_dir / "data_report.json", train_meta)
    torch.manual_seed(config.seed)
    model = load_model(base, config.attn_implementation, config.dtype)
    repaired = repair_untrained_rows(model, tokenizer) if first_chat else []
    model = prepare_for_training(model, tokenizer, config, new_vocabulary_rows(base))
    write_parameters(stage, args, config, base, model, repaired_embedding_rows=repaired)
    card = model_card(stage, args, base, config, train_meta)
    callbacks = [StopIfFinished(), tensorboard_callback(args.metrics_dir), CardInCheckpoints(card)]
    if stage.chat and args.eval_data and config.eval_generation_samples > 0:
        from omics.evaluate.run import GenerationEvalCallback

        callbacks.append(GenerationEvalCallback(
            eval_data, train_meta.get("task_summary"), tokenizer,
            config.reasoning_system_prompt if stage.reasoning else config.system_prompt,
            config.eval_generation_samples, max_new_tokens=stage.max_new_tokens,
            reasoning=stage.reasoning, log_dir=args.metrics_dir / "tensorboard", max_length=config.max_length))
    trainer = OmicsTrainer(
        model=model,
        args=training_arguments(config, checkpoints, eval_set is not None,
                                best_metric(stage, config, eval_set is not None)),
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=PackedCollator(tokenizer.pad_token_id,
                                     one_row=attention_of(model) == "flash_attention_2"),
        processing_class=tokenizer,
        callbacks=callbacks,
        train_config=config,
    )
    if use_cuda():
        torch.cuda.reset_peak_memory_stats()
    result = train_or_restore(trainer, last_checkpoint(checkpoints) if args.resume else None)
    merge_check = MergeCheck.first_blocks(train_set, trainer.data_collator)
    save_trained(trainer.model, tokenizer, args.output_dir, merge_check, card)
    runtime = result.metrics.get("train_runtime", 0.0)
    return finish_run(stage, args, config, trainer, result, started, {
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "tokens_per_second": round(trainer.state.num_input_tokens_seen / runtime, 1) if runtime else None,
        "blocks": len(train_set),
        "merge": merge_check.summary(),  # adapter vs merged loss on the first blocks; None without LoRA
    })


def write_parameters(stage: Stage, args: RunArgs, config: TrainConfig, base: Path, model, **extra: Any) -> None:
    """parameters.json: what a run reads and runs with, written before its first step."""
    write_json(args.metrics_dir / "parameters.json", {
        "stage": stage.number, "command": sys.argv, "config": config.to_dict(),
        "base_model": str(base.resolve()), "data": file_record(args.data),
        "eval_data": file_record(args.eval_data) if args.eval_data else None,
        "extra_data": {k: file_record(v) for k, v in args.extra_data.items()},
        "parameters": count_parameters(model), **extra,
        "versions": versions(), "git_commit": git_commit(), "device": describe(),
    })


def tensorboard_callback(metrics_dir: Path) -> TensorBoardCallback:
    """Every logged value (losses, lr, a trainer's own metrics) under metrics_dir/tensorboard."""
    tensorboard = TensorBoardCallback()
    tensorboard.logging_dir = str(metrics_dir / "tensorboard")
    return tensorboard


def finish_run(stage: Stage, args: RunArgs, config: TrainConfig, trainer: Trainer, result: TrainOutput,
               started: float, details: dict[str, Any]) -> dict[str, Any]:
    """Write run_summary.json once the model is saved (--resume refuses a finished run from then on), and
    delete the checkpoints unless kept; return the summary."""
    summary = {
        "stage": stage.number,
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 2),
        "wall_time_s": round(time.time() - started, 2),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if use_cuda() else None,
        **details,
        "kept": kept_checkpoint(trainer),  # the best checkpoint by validation, or the last step
        "model_dir": str(args.output_dir),
        "log_history": trainer.state.log_history,
    }
    write_json(args.metrics_dir / "run_summary.json", summary)
    checkpoints = args.output_dir / CHECKPOINTS
    if not config.keep_checkpoints:
        shutil.rmtree(checkpoints)
        log.info("checkpoints deleted (keep_checkpoints: false): %s", checkpoints)
    return summary
