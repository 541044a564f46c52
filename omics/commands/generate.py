"""`omics generate --model DIR --data FILE --out FILE`: answers to a user's own questions.

Input and output are `.jsonl`, `.csv` or `.xlsx` with a field/column `input` (optional `system`, optional
`task`); the output is the same rows plus `generated` (and `prediction` where a task is known).
"""

from __future__ import annotations

import csv
import json
import os
from argparse import Namespace
from pathlib import Path

from omics.errors import UserError

SUFFIXES = (".jsonl", ".csv", ".xlsx")


def read_rows(path: Path) -> list[dict]:
    if path.suffix not in SUFFIXES:
        raise UserError(f"{path}: expected one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise UserError(f"{path} not found")
    if path.suffix == ".jsonl":
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise UserError(f"{path}:{lineno}: invalid JSON ({err.msg})") from None
    elif path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    else:
        from openpyxl import load_workbook

        sheet = load_workbook(path, read_only=True).active
        header, *body = [list(r) for r in sheet.iter_rows(values_only=True)]
        rows = [dict(zip(header, r, strict=False)) for r in body if any(v is not None for v in r)]
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not str(row.get("input") or "").strip():
            raise UserError(f"{path}: row {number} has no 'input' (a column/field named input is required)")
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    """Atomic write in the format the suffix names."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    if path.suffix == ".jsonl":
        partial.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
    elif path.suffix == ".csv":
        with partial.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in r.items()}
                             for r in rows)
    else:
        from openpyxl import Workbook

        book = Workbook()
        book.active.append(fields)
        for row in rows:
            book.active.append([json.dumps(row.get(k)) if isinstance(row.get(k), dict | list) else row.get(k)
                                for k in fields])
        book.save(partial)
    os.replace(partial, path)


def run(args: Namespace) -> list[dict]:
    from omics.config import SYSTEM_PROMPT
    from omics.data.instructions import prompt_text
    from omics.evaluate.generate import make_backend
    from omics.evaluate.parse import extract_answer, parse_prediction
    from omics.evaluate.report import ensure_writable
    from omics.evaluate.run import training_summary
    from omics.evaluate.tasks import build_task_specs
    from omics.model import require_model_dir

    if args.out.suffix not in SUFFIXES:
        raise UserError(f"--out {args.out}: expected one of {', '.join(SUFFIXES)}")
    ensure_writable(args.out, args.overwrite)
    rows = read_rows(args.data)
    model = require_model_dir(args.model, "Pass the directory of a trained model (e.g. archive/models/stage2).")
    summary = training_summary(args.train_data, model.parent.parent / "metrics" / model.name)
    specs = build_task_specs(summary) if summary else {}
    backend = make_backend(args.backend, model, args.max_new_tokens, args.batch_tokens, args.dtype)
    prompts = [prompt_text(backend.tokenizer, str(r["input"]), str(r.get("system") or SYSTEM_PROMPT)) for r in rows]
    for row, generation in zip(rows, backend.generate(prompts), strict=True):
        text = row["generated"] = generation.text
        if row.get("task") in specs:
            row["prediction"] = parse_prediction(extract_answer(text)[0] if "<answer>" in text else text,
                                                 specs[row["task"]])
    write_rows(args.out, rows)
    print(f"{len(rows)} answers written to {args.out}")
    return rows
