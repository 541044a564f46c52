"""`omics pairs --model DIR --data train.jsonl --out pairs.jsonl`: preference pairs without human labelling.

K answers are sampled per question (the evaluation's generation backend, seeded), each scored against the
question's known label by the evaluation's parser and task types: 1 or 0 for a classification answer (a
multilabel answer: the Jaccard overlap), the closeness 1 - |error| / label range for a regression one, 0 for
an answer that does not parse. The best answer is `chosen`, the worst `rejected`; a question whose K answers
all score alike teaches nothing and is skipped. The prompt is the question text, as the model was trained on
it (DPO training asks it under the model's system prompt). The output and its report (`OUT.report.json`) are
written atomically once every question is done: a killed run leaves nothing behind, and is not resumed.
"""

from __future__ import annotations

import json
import logging
from argparse import Namespace
from collections import Counter
from itertools import groupby, islice
from pathlib import Path
from typing import Any

from omics.errors import UserError
from omics.rewards import prediction_score

log = logging.getLogger("omics")


def report_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.report.json")


def best_and_worst(samples: list[dict]) -> tuple[dict, dict] | None:
    """The highest- and lowest-scored of a question's non-empty answers (the first of equals), None when all agree
    (an empty answer, the model stopping at once, is no text to prefer or reject)."""
    samples = [s for s in samples if s["text"].strip()]
    if not samples:
        return None
    best = max(samples, key=lambda s: s["score"])
    worst = min(samples, key=lambda s: s["score"])
    return None if best["score"] == worst["score"] else (best, worst)


def _check(args: Namespace) -> None:
    for flag, value, least in (("--samples", args.samples, 2), ("--max-new-tokens", args.max_new_tokens or 1, 1),
                               ("--max-samples", args.max_samples, 1), ("--per-task", args.per_task, 1)):
        if value is not None and value < least:
            raise UserError(f"{flag} must be at least {least}, got {value}")
    if args.temperature <= 0:
        raise UserError(f"--temperature must be above 0 (answers are sampled), got {args.temperature}")
    if args.out.suffix != ".jsonl":
        raise UserError(f"--out {args.out}: pairs are written as .jsonl (what omics dpo train reads)")


def run(args: Namespace) -> dict[str, Any]:
    from omics.data.validate import DataReport, read_instructions
    from omics.evaluate.generate import make_backend
    from omics.evaluate.parse import normalize_label
    from omics.evaluate.run import _limit, training_tasks
    from omics.evaluate.scoring import _specs, parse_rows
    from omics.evaluate.stream import PromptIds, stream_rows
    from omics.io import ensure_writable, write_json, write_text
    from omics.model import require_model_dir
    from omics.model_card import read_card
    from omics.stages import stage

    _check(args)
    for path in (args.out, report_path(args.out)):
        ensure_writable(path, args.overwrite)
    model_dir = require_model_dir(args.model, "Pass a trained model folder (e.g. archive/models/stage2).")
    card = read_card(model_dir)
    report = DataReport(str(args.data))
    records = list(islice(_limit(read_instructions(args.data, report), args.per_task), args.max_samples))
    if report.skipped:
        log.warning("%s", report.summary())
    specs = _specs(records, training_tasks(args.train_data, card))
    system, reasoning = card.default_prompt, card.reasoning  # asked as the model is used: a reasoning model reasons
    max_new_tokens = args.max_new_tokens or stage("dpo").evaluated_as(card).max_new_tokens  # as it is evaluated
    backend = make_backend(args.backend, model_dir, max_new_tokens, args.batch_tokens, args.dtype,
                           temperature=args.temperature, seed=args.seed)
    prompt_ids = PromptIds(backend.tokenizer, card.max_length)

    def finish(record: dict, generation) -> dict:
        row = {"task": record["task"], "generated": generation.text}
        parse_rows([row], specs, reasoning)
        spec = specs[record["task"]]
        return {"record": record, "text": generation.text,
                "score": prediction_score(row["prediction"], normalize_label(record["label"], spec), spec)}

    asked = [record for record in records for _ in range(args.samples)]  # a question's K answers stay together
    rows = (row for batch in stream_rows(backend, asked, lambda r: prompt_ids(r["input"], system)[0], finish,
                                         len(asked)) for row in batch)
    pairs, questions, made = [], Counter(), Counter()
    for _, group in groupby(rows, key=lambda row: id(row["record"])):
        samples = list(group)
        record = samples[0]["record"]
        questions[record["task"]] += 1
        if found := best_and_worst(samples):
            made[record["task"]] += 1
            chosen, rejected = found
            pairs.append({"prompt": record["input"], "chosen": chosen["text"], "rejected": rejected["text"],
                          "task": record["task"], "chosen_score": round(chosen["score"], 4),
                          "rejected_score": round(rejected["score"], 4), "line": record["line"]})
    per_task = {task: {"questions": n, "pairs": made[task], "skipped": n - made[task]}
                for task, n in sorted(questions.items())}
    summary = {"model": str(Path(model_dir).resolve()), "data": str(Path(args.data).resolve()), "out": str(args.out),
               "samples": args.samples, "temperature": args.temperature, "seed": args.seed,
               "max_new_tokens": max_new_tokens, "system_prompt": system, "questions": sum(questions.values()),
               "pairs": len(pairs), "per_task": per_task}
    write_text(args.out, "".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs))
    write_json(report_path(args.out), summary)
    print(f"{'task':<32} {'questions':>9} {'pairs':>6} {'skipped':>7}")
    for task, counts in per_task.items():
        print(f"{task:<32} {counts['questions']:>9} {counts['pairs']:>6} {counts['skipped']:>7}")
    print(f"{len(pairs)} pairs from {summary['questions']} questions -> {args.out} (report: {report_path(args.out)})")
    if not pairs:
        log.warning("no pairs: every question's %d answers scored alike (raise --samples or --temperature)",
                    args.samples)
    return summary
