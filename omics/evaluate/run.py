"""Stages 2-3 evaluation: generate → parse → score → report (parsing and scoring live in scoring.py)."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from omics.config import SYSTEM_PROMPT
from omics.data.instructions import prompt_text
from omics.data.labels import task_warnings
from omics.data.packing import file_sha256
from omics.data.validate import DataReport, read_instructions
from omics.device import mixed_precision
from omics.errors import UserError
from omics.evaluate.confidence import true_class_probability
from omics.evaluate.parse import normalize_label
from omics.evaluate.report import (
    compare_files,
    ensure_writable,
    format_table,
    write_metrics,
    write_predictions,
    write_text,
)
from omics.evaluate.scoring import _specs, parse_rows, score_rows, training_summary

log = logging.getLogger("omics")


def _limit(records: list[dict], max_per_task: int | None) -> list[dict]:
    if max_per_task is None:
        return records
    seen: dict[str, int] = defaultdict(int)
    kept = []
    for record in records:
        seen[record["task"]] += 1
        if seen[record["task"]] <= max_per_task:
            kept.append(record)
    return kept


def evaluate_generation(stage: int, args: Any) -> dict:
    """`omics stageN evaluate` for Stages 2-3: every file of evaluation.md §4 under args.metrics_dir."""
    from omics.evaluate.generate import make_backend
    from omics.model import require_model_dir

    metrics_dir: Path = args.metrics_dir
    for name in ("metrics.json", "predictions.jsonl"):
        ensure_writable(metrics_dir / name, args.overwrite)
    model_dir = require_model_dir(args.model, f"Train it first: omics stage{stage} train, or pass --model DIR.")
    record = metrics_dir / "parameters.json"
    system = json.loads(record.read_text())["config"]["system_prompt"] if record.is_file() else SYSTEM_PROMPT
    report = DataReport(str(args.data))
    if args.max_samples is not None and args.max_samples < 1:
        raise UserError(f"--max-samples must be at least 1, got {args.max_samples}")
    records = _limit(list(read_instructions(args.data, report)), args.max_samples)
    if report.skipped:
        log.warning("%s", report.summary())
    train_summary = training_summary(args.train_data, metrics_dir)
    specs = _specs(records, train_summary)
    warnings = task_warnings(train_summary, {r["task"] for r in records})
    for warning in warnings:
        log.warning("%s", warning)

    backend = make_backend(args.backend, model_dir, args.max_new_tokens, args.batch_tokens, args.dtype)
    started = time.time()
    prompts = [prompt_text(backend.tokenizer, r["input"], system) for r in records]
    generations = backend.generate(prompts)
    seconds = time.time() - started
    rows = [{"task": r["task"], "input": r["input"], "label": r["label"], "generated": g.text,
             "output": r.get("output", "")} for r, g in zip(records, generations, strict=True)]
    parse_rows(rows, specs, reasoning=stage == 3)
    for row, generation in zip(rows, generations, strict=True):
        spec = specs[row["task"]]
        if spec.type in ("binary", "multiclass"):
            row["probability"] = true_class_probability(generation, spec, normalize_label(row["label"], spec),
                                                        row["prediction"], backend.tokenizer, answer_tag=stage == 3)
    results, overall = score_rows(rows, specs, reasoning=stage == 3)
    meta = {
        "stage": stage, "model": str(Path(model_dir).resolve()), "data": str(Path(args.data).resolve()),
        "data_sha256": file_sha256(args.data), "backend": backend.name, "n_examples": len(rows),
        "generation_seconds": round(seconds, 2), "examples_per_second": round(len(rows) / max(seconds, 1e-9), 3),
        "skipped_lines": dict(report.skipped), "task_warnings": warnings,
        "task_specs": {task: spec.to_dict() for task, spec in specs.items()},
    }
    write_predictions(metrics_dir / "predictions.jsonl", rows)
    doc = write_metrics(metrics_dir, results, overall, meta, tag=f"stage{stage}")
    print(format_table(results, overall))
    _write_comparison(stage, metrics_dir, meta["data_sha256"])
    return doc


def _write_comparison(stage: int, metrics_dir: Path, data_sha: str) -> None:
    """When an earlier stage was evaluated on the same file, print and save the per-task deltas (§4)."""
    earlier = {f"stage{s}": metrics_dir.parent / f"stage{s}" / "metrics.json" for s in range(1, stage)}
    same = {k: p for k, p in earlier.items()
            if p.is_file() and json.loads(p.read_text())["meta"].get("data_sha256") == data_sha}
    if same:
        table, _ = compare_files({**same, f"stage{stage}": metrics_dir / "metrics.json"})
        print(table)
        write_text(metrics_dir / "comparison.md", table + "\n")


class GenerationEvalCallback(TrainerCallback):
    """At each periodic evaluation, answer a small sample of the eval file and log its Mixed Scores.

    Loss alone hides collapse (a model answering "negative" to everything can have a fine loss); the
    generated answers, scored like `evaluate`, show it while training runs.
    """

    def __init__(self, eval_data: Path, train_summary: dict | None, tokenizer, system: str, samples: int,
                 max_new_tokens: int, reasoning: bool, log_dir: Path):
        records = list(read_instructions(eval_data, DataReport(str(eval_data))))
        tasks = {r["task"] for r in records}
        self.records = _limit(records, max(1, -(-samples // len(tasks))))
        self.specs = _specs(self.records, train_summary)
        self.prompts = [prompt_text(tokenizer, r["input"], system) for r in self.records]
        self.tokenizer, self.max_new_tokens = tokenizer, max_new_tokens
        self.reasoning, self.log_dir = reasoning, log_dir

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        from torch.utils.tensorboard import SummaryWriter

        from omics.evaluate.generate import HFBackend

        was_training = model.training
        model.eval()
        # as in training: bf16 base weights next to fp32 trained copies need autocast to run together
        with mixed_precision(model):
            generations = HFBackend(model, self.tokenizer, self.max_new_tokens).generate(self.prompts)
        model.train(was_training)
        rows = [{"task": r["task"], "input": r["input"], "label": r["label"], "generated": g.text}
                for r, g in zip(self.records, generations, strict=True)]
        parse_rows(rows, self.specs, self.reasoning)
        results, overall = score_rows(rows, self.specs, self.reasoning)
        with SummaryWriter(str(self.log_dir), filename_suffix=".generation") as writer:
            writer.add_scalar("eval_generation/mixed_score_mean", overall["mixed_score_mean"], state.global_step)
            for task, result in results.items():
                writer.add_scalar(f"eval_generation/{task}/mixed_score", result["mixed_score"], state.global_step)
                writer.add_scalar(f"eval_generation/{task}/valid_rate", result["valid_rate"], state.global_step)
        log.info("generation eval at step %d: mixed score %.2f over %d answers%s", state.global_step,
                 overall["mixed_score_mean"], len(rows),
                 "".join(f"; {t}: {w}" for t, r in results.items() for w in r["warnings"]))
