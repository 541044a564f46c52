"""Stages 2-3 evaluation: generate → parse → score → report, and re-scoring a stored predictions file.

Everything after generation is a pure function of the predictions file, so `omics score` recomputes the
exact same metrics without a model or a GPU.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from omics.data.labels import task_warnings, training_label_summary
from omics.data.packing import file_sha256, model_fingerprint
from omics.data.validate import DataReport, read_instructions
from omics.device import default_batch_tokens, mixed_precision
from omics.errors import UserError
from omics.evaluate.confidence import true_class_probability
from omics.evaluate.generate import Backend, Generation
from omics.evaluate.html_report import write_report
from omics.evaluate.parse import normalize_label
from omics.evaluate.report import compare_files, format_table, write_metrics
from omics.evaluate.scoring import _specs, parse_rows, reference_check, score_rows
from omics.evaluate.stream import PromptIds, ResultsLog, restart_point, resumed, stream_rows
from omics.evaluate.tasks import TaskSpec
from omics.io import ensure_writable, write_text
from omics.model_card import ModelCard, find_card, read_card
from omics.stages import DIRECT_ANSWER_TOKENS, Stage, registered

log = logging.getLogger("omics")


def _limit(records: Iterable[dict], max_per_task: int | None) -> Iterator[dict]:
    """The first `max_per_task` records of each task (all when None), streaming."""
    seen: Counter = Counter()
    for record in records:
        seen[record["task"]] += 1
        if max_per_task is None or seen[record["task"]] <= max_per_task:
            yield record


def task_quota(counts: Counter, cap: int) -> dict[str, int]:
    """Per task, how many examples to keep: equal shares of `cap`, a small task's unused share to the others."""
    quota, left = {}, cap
    for k, task in enumerate(sorted(counts, key=lambda t: (counts[t], t))):
        quota[task] = min(counts[task], left // (len(counts) - k))
        left -= quota[task]
    return quota


def _task_counts(path: Path) -> Counter:
    return Counter(r["task"] for r in read_instructions(path, DataReport(str(path))))


def stratified_records(path: Path, cap: int, counts: Counter | None = None) -> Iterator[dict]:
    """At most `cap` records (0: all), shared equally between tasks, the first of each in file order.

    Two streaming passes (count, then take): memory holds the counts, never the file.
    """
    counts = counts if counts is not None else _task_counts(path)
    quota = task_quota(counts, cap) if cap > 0 else counts
    taken: Counter = Counter()
    for record in read_instructions(path, DataReport(str(path))):
        if taken[record["task"]] < quota[record["task"]]:
            taken[record["task"]] += 1
            yield record


def eval_subset(path: Path, cap: int, cache_dir: Path) -> Path:
    """`--eval-data` capped at `eval_max_samples` (stratified by task) for the eval loss and the generation
    check alike: the file itself when it fits, else a subset written once into the run's cache folder."""
    if cap <= 0:
        return path
    subset = cache_dir / f"eval-{file_sha256(path)[:16]}-{cap}.jsonl"
    if subset.is_file():
        return subset
    counts = _task_counts(path)
    if sum(counts.values()) <= cap:
        return path
    write_text(subset, "".join(json.dumps({k: r[k] for k in ("input", "output", "label", "task")},
                                          ensure_ascii=False) + "\n" for r in stratified_records(path, cap, counts)))
    log.info("eval data: %d of the %d examples of %s (eval_max_samples, stratified by task): %s", cap,
             sum(counts.values()), path, subset)
    return subset


def training_tasks(train_data: Path | None, card: ModelCard) -> dict | None:
    """The training label summary: of --train-data when given, else the one the model folder records."""
    return training_label_summary(train_data) if train_data is not None else card.tasks


def _scoring_row(row: dict, specs: dict[str, TaskSpec], reasoning: bool) -> dict:
    """What metrics read of a stored row: no input, no generated text, and the reference answer's round trip
    as a verdict (its text kept only when it fails to parse back, for the report's examples)."""
    kept = {k: row[k] for k in ("task", "label", "prediction", "format_ok") if k in row}
    if "probability" in row:
        kept["probability"] = row["probability"]
    if row.get("format_ok") is not None:
        kept["output_words"] = len(row["generated"].split())
    if row.get("output"):
        spec = specs[row["task"]]
        kept["reference_parsed"] = reference_check(row["output"], normalize_label(row["label"], spec), spec, reasoning)
        if kept["reference_parsed"] is not True:
            kept["output"] = row["output"]
    return kept


def answer_row(record: dict, generation: Generation, specs: dict[str, TaskSpec], tokenizer, reasoning: bool) -> dict:
    """An answer as its predictions row, parsed, with p(true class) read while its log-probabilities exist."""
    spec = specs[record["task"]]
    row = {"task": record["task"], "input": record["input"], "label": record["label"], "generated": generation.text,
           "output": record.get("output", "")}
    parse_rows([row], specs, reasoning)
    if spec.task_type.reads_probability:
        row["probability"] = true_class_probability(generation, spec, normalize_label(record["label"], spec),
                                                    row["prediction"], tokenizer, answer_tag=reasoning)
    return row


def evaluate_stage(stage: Stage, args: Any) -> dict:
    """`omics stageN evaluate` of a generation stage, in each mode asked (`--mode`; a one-mode stage: its own):
    the default mode's results in --metrics-dir, another's in --metrics-dir/<mode>; with two, `modes.md`
    compares them per task (what reasoning adds or costs)."""
    stage = stage.evaluated_as(find_card(args.model))
    asked = getattr(args, "mode", stage.modes[0])
    modes = stage.modes if asked == "both" else (asked,)
    docs = {mode: evaluate_generation(stage, args, mode=mode) for mode in modes}
    if len(docs) > 1:
        table, _ = compare_files({mode: mode_dir(stage, args.metrics_dir, mode) / "metrics.json" for mode in docs})
        print(f"\n{stage.name}, {' vs '.join(docs)} mode:\n{table}")
        write_text(args.metrics_dir / "modes.md", f"# {stage.name}: {' vs '.join(docs)} mode\n\n{table}\n")
    return docs[modes[0]]


def mode_dir(stage: Stage, metrics_dir: Path, mode: str) -> Path:
    """--metrics-dir itself for the stage's default mode; `<metrics-dir>/<mode>` for another."""
    return metrics_dir if mode == stage.modes[0] else metrics_dir / mode


def evaluate_generation(stage: Stage, args: Any, backend: Backend | None = None, mode: str | None = None) -> dict:
    """`omics stageN evaluate` for Stages 2-3: every file of evaluation.md §4 under args.metrics_dir.

    `mode` "direct" asks with the training system prompt and parses the whole answer; "reasoning" asks with the
    reasoning prompt Stage 3 trained its reasoning examples with and reads the answer inside <answer> tags.
    Results go to `mode_dir` (args.metrics_dir for the stage's default mode).

    Streams: the data file is read twice (label summary, then prompts by windows), rows are appended to
    predictions.jsonl batch by batch, and scoring reads that file back; `--resume` continues a killed run.
    `backend` replaces the one args name (the memory benchmark's fixed answers).
    """
    from omics.evaluate.generate import make_backend
    from omics.model import require_model_dir

    mode = mode or stage.modes[0]
    metrics_dir = mode_dir(stage, args.metrics_dir, mode)
    reasoning = mode == "reasoning"
    if args.resume and not args.overwrite and (metrics_dir / "metrics.json").is_file():
        raise UserError(f"{metrics_dir} holds a finished evaluation (metrics.json); nothing to resume. "
                        "Pass --overwrite to run it again.")
    if not args.resume:
        ensure_writable(metrics_dir / "metrics.json", args.overwrite)
    model_dir = require_model_dir(args.model, f"Train it first: omics {stage.name} train, or pass --model DIR.")
    card = read_card(model_dir)
    system = card.reasoning_prompt if reasoning else card.system_prompt
    max_new_tokens = args.max_new_tokens if args.max_new_tokens is not None else (
        stage.max_new_tokens if mode == stage.modes[0] else DIRECT_ANSWER_TOKENS)
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    max_length = args.max_length or card.max_length
    if args.max_samples is not None and args.max_samples < 1:
        raise UserError(f"--max-samples must be at least 1, got {args.max_samples}")
    report = DataReport(str(args.data))
    train_summary = training_tasks(args.train_data, card)
    specs = _specs(_limit(read_instructions(args.data, report), args.max_samples), train_summary)
    if report.skipped:
        log.warning("%s", report.summary())
    warnings = task_warnings(train_summary, report.tasks)  # the evaluated tasks
    for warning in warnings:
        log.warning("%s", warning)
    backend = backend or make_backend(args.backend, model_dir, max_new_tokens, args.batch_tokens, args.dtype)
    settings = {"stage": stage.number, "mode": mode, "data": str(Path(args.data).resolve()),
                "data_sha256": file_sha256(args.data),
                "model": str(Path(model_dir).resolve()), "model_files": model_fingerprint(model_dir),
                "backend": backend.name, "max_samples": args.max_samples, "max_new_tokens": max_new_tokens,
                "max_length": max_length, "system_prompt": system, "dtype": getattr(args, "dtype", "auto"),
                "batch_tokens": default_batch_tokens(args.batch_tokens)}  # batches shape the float rounding
    results_log = ResultsLog(metrics_dir / "predictions.jsonl", settings)
    done = results_log.open(args.resume, args.overwrite)
    restart = restart_point(done)
    prompt_ids = PromptIds(backend.tokenizer, max_length)

    def finish(record: dict, generation: Generation) -> dict:
        row = answer_row(record, generation, specs, backend.tokenizer, reasoning)
        return {**row, "line": record["line"], "prompt_fit": record["prompt_fit"]}

    def prompt(record: dict) -> np.ndarray:
        ids, record["prompt_fit"] = prompt_ids(record["input"], system)
        return ids

    total = sum(min(n, args.max_samples or n) for n in report.tasks.values())
    started = time.time()
    records = islice(_limit(read_instructions(args.data, DataReport(str(args.data))), args.max_samples), restart, None)
    if done < total:  # a run killed after its last row but before metrics.json only needs scoring
        for rows in resumed(stream_rows(backend, records, prompt, finish, total - restart), done - restart):
            results_log.append(rows)
    seconds = time.time() - started
    rows, fits = [], Counter()
    for row in results_log.rows():
        rows.append(_scoring_row(row, specs, reasoning))
        fits[row["task"], row.get("prompt_fit", "whole")] += 1
    results, overall = score_rows(rows, specs, reasoning)
    generated = len(rows) - done
    meta = {
        "stage": stage.number, "mode": mode, "model": settings["model"], "data": settings["data"],
        "data_sha256": settings["data_sha256"],
        "backend": backend.name, "n_examples": len(rows), "resumed_after": done,
        "generation_seconds": round(seconds, 2), "examples_per_second": round(generated / max(seconds, 1e-9), 3),
        "skipped_lines": dict(report.skipped), "task_warnings": warnings, "max_length": max_length,
        "prompts_shortened": {task: fits[task, "shortened"] for task in specs},
        "prompts_question_cut": {task: fits[task, "question_cut"] for task in specs},
        "task_specs": {task: spec.to_dict() for task, spec in specs.items()},
    }
    label = stage.name if mode == stage.modes[0] else f"{stage.name}-{mode}"
    title = f"{stage.name} evaluation ({mode} mode) of the {card.stage or Path(model_dir).name} model {model_dir}"
    doc = write_metrics(metrics_dir, results, overall, meta, tag=label, title=title)
    print(format_table(results, overall))
    print(prompt_fit_summary(meta, max_length))
    _write_comparison(label, stage, args.metrics_dir, metrics_dir, meta["data_sha256"])
    write_report(metrics_dir)
    return doc


def prompt_fit_summary(meta: dict, max_length: int | None) -> str:
    """One line per report: how many prompts training's rule shortened, per task."""
    if max_length is None:
        return "prompts: not shortened (no training max_length known; pass --max-length N)"
    shortened = {t: n for t, n in meta["prompts_shortened"].items() if n}
    cut = {t: n for t, n in meta["prompts_question_cut"].items() if n}
    text = f"prompts shortened to max_length={max_length} (training's rule): "
    text += ", ".join(f"{t} {n}" for t, n in sorted(shortened.items())) or "none"
    if cut:
        text += "; without a sequence to shorten (middle of the question cut): " + ", ".join(
            f"{t} {n}" for t, n in sorted(cut.items()))
    return text


def _write_comparison(label: str, stage: Stage, stage_dir: Path, metrics_dir: Path, data_sha: str) -> None:
    """When an earlier stage was evaluated on the same file, print and save the per-task deltas (§4)."""
    ours = (metrics_dir / "metrics.json").resolve()  # e.g. the Stage 1 model evaluated into metrics/stage1
    earlier = {s.name: stage_dir.parent / s.name / "metrics.json" for s in registered().values()
               if s.number < stage.number}
    n_examples = json.loads((metrics_dir / "metrics.json").read_text())["overall"]["n_examples"]

    def same_questions(path: Path) -> bool:  # the same file, and all of it or the same --max-samples share
        document = json.loads(path.read_text())
        return (document["meta"].get("data_sha256") == data_sha
                and document["overall"].get("n_examples") == n_examples)

    same = {k: p for k, p in earlier.items() if p.is_file() and p.resolve() != ours and same_questions(p)}
    if same:
        table, _ = compare_files({**same, label: metrics_dir / "metrics.json"})
        print(table)
        write_text(metrics_dir / "comparison.md", table + "\n")


def strict(rows: list[dict]) -> list[dict]:
    """Reasoning answers read strictly: one outside `<answer>` tags is invalid (evaluation falls back to the whole
    text), so a checkpoint that answers well but stopped using the trained format does not score best."""
    return [row if row["format_ok"] else {**row, "prediction": None, "valid": False, "probability": None}
            for row in rows]


def validation_scalars(result: dict) -> dict[str, float]:
    """A task's validation curves: Mixed Score, paper metric, valid rate, format compliance, collapse (0/1)."""
    scalars = {"mixed_score": result["mixed_score"], "valid_rate": result["valid_rate"],
               "collapse": float(result["collapse"])}
    if (paper := result.get("paper_metric") or {}).get("value") is not None:
        scalars["paper_metric"] = paper["value"]
    if "format_compliance" in result:
        scalars["format_compliance"] = result["format_compliance"]
    return scalars


class GenerationEvalCallback(TrainerCallback):
    """At each periodic evaluation, answer a small sample of the eval file and log its Mixed Scores.

    Loss alone hides collapse (a model answering "negative" to everything can have a fine loss); the
    generated answers, scored like `evaluate`, show it while training runs.
    """

    def __init__(self, eval_data: Path, train_summary: dict | None, tokenizer, system: str, samples: int,
                 max_new_tokens: int, reasoning: bool, log_dir: Path, max_length: int | None = None):
        self.records = list(stratified_records(eval_data, samples))
        self.specs = _specs(self.records, train_summary)
        prompt_ids = PromptIds(tokenizer, max_length)  # training's prompts, shortened by training's rule
        self.prompts = [prompt_ids(r["input"], system)[0] for r in self.records]
        self.tokenizer, self.max_new_tokens = tokenizer, max_new_tokens
        self.reasoning, self.log_dir = reasoning, log_dir

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        from torch.utils.tensorboard import SummaryWriter

        from omics.evaluate.generate import HFBackend

        was_training = model.training
        model.eval()
        backend = HFBackend(model, self.tokenizer, self.max_new_tokens, default_batch_tokens(None))
        # as in training: bf16 base weights next to fp32 trained copies need autocast to run together
        with mixed_precision(model):
            rows = [row for batch in stream_rows(
                backend, range(len(self.records)), self.prompts.__getitem__,
                lambda i, g: answer_row(self.records[i], g, self.specs, self.tokenizer, self.reasoning),
                total=len(self.records))
                for row in batch]
        model.train(was_training)
        results, overall = score_rows(rows, self.specs, self.reasoning)
        scalars = {"mixed_score_mean": overall["mixed_score_mean"]}
        for task, result in results.items():
            scalars |= {f"{task}/{name}": value for name, value in validation_scalars(result).items()}
        if self.reasoning:  # the selection score: an answer outside the trained format counts as invalid
            scalars["strict_mixed_score_mean"] = score_rows(strict(rows), self.specs, True)[1]["mixed_score_mean"]
            scalars["format_compliance_mean"] = round(statistics.fmean(
                r["format_compliance"] for r in results.values()), 2)
        selection = scalars["strict_mixed_score_mean" if self.reasoning else "mixed_score_mean"]
        with SummaryWriter(str(self.log_dir), filename_suffix=".generation") as writer:
            for name, value in scalars.items():
                writer.add_scalar(f"eval_generation/{name}", value, state.global_step)
        if metrics is not None:  # what best_model_metric=mixed_score compares (HF reads it after this callback)
            metrics["eval_mixed_score"] = selection
        state.log_history.append({"step": state.global_step, "eval_mixed_score": selection,
                                  **{f"eval_{name}": value for name, value in scalars.items()
                                     if name != "mixed_score_mean" or self.reasoning}})
        log.info("generation eval at step %d: mixed score %.2f over %d answers%s%s", state.global_step,
                 overall["mixed_score_mean"], len(rows),
                 f" (format compliance {scalars['format_compliance_mean']:.1f}%, strict mixed score {selection:.2f}:"
                 " the selection score)" if self.reasoning else "",
                 "".join(f"; {t}: {w}" for t, r in results.items() for w in r["warnings"]))
