"""`omics generate --model DIR --data FILE --out FILE`: answers to a user's own questions.

Input and output are `.jsonl`, `.csv` or `.xlsx` with a field/column `input` (optional `system`, optional
`task`); the output is the same rows plus `generated` (and `prediction` where a task is known). Rows stream:
answers go to `.OUT.partial.jsonl` batch by batch (so `--resume` continues a killed run), then into OUT.
"""

from __future__ import annotations

import csv
import json
import os
from argparse import Namespace
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from omics.evaluate.generate import Generation

from omics.errors import UserError

SUFFIXES = (".jsonl", ".csv", ".xlsx")
Rows = Callable[[], Iterator[dict]]


def _raw_rows(path: Path) -> Iterator[dict]:
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as err:
                        raise UserError(f"{path}:{lineno}: invalid JSON ({err.msg})") from None
    elif path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            yield from csv.DictReader(handle)
    else:
        from openpyxl import load_workbook

        book = load_workbook(path, read_only=True)
        lines = book.active.iter_rows(values_only=True)
        header = list(next(lines, []))
        yield from (dict(zip(header, r, strict=False)) for r in lines if any(v is not None for v in r))
        book.close()


def read_rows(path: Path) -> Iterator[dict]:
    """The rows of a question file, one at a time, each checked for an `input`."""
    if path.suffix not in SUFFIXES:
        raise UserError(f"{path}: expected one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise UserError(f"{path} not found")
    number = 0
    for number, row in enumerate(_raw_rows(path), 1):
        if not isinstance(row, dict) or not str(row.get("input") or "").strip():
            raise UserError(f"{path}: row {number} has no 'input' (a column/field named input is required)")
        yield row
    if not number:
        raise UserError(f"{path}: no rows")


def _cell(value: object) -> object:
    return json.dumps(value) if isinstance(value, dict | list) else value


def write_rows(path: Path, rows: Rows) -> None:
    """Atomic write in the format the suffix names; `rows()` is read twice for .csv/.xlsx (columns, then rows)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        with partial.open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows())
    else:
        fields = list(dict.fromkeys(k for row in rows() for k in row))
        if path.suffix == ".csv":
            with partial.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=fields)
                writer.writeheader()
                writer.writerows({k: _cell(v) for k, v in r.items()} for r in rows())
        else:
            from openpyxl import Workbook

            book = Workbook(write_only=True)
            sheet = book.create_sheet()
            sheet.append(fields)
            for row in rows():
                sheet.append([_cell(row.get(k)) for k in fields])
            book.save(partial)
    os.replace(partial, path)


def run(args: Namespace) -> int:
    from omics.answers import extract_answer
    from omics.data.packing import file_sha256, model_fingerprint
    from omics.device import default_batch_tokens, has_package
    from omics.evaluate.generate import make_backend
    from omics.evaluate.parse import parse_prediction
    from omics.evaluate.run import training_tasks
    from omics.evaluate.stream import PromptIds, ResultsLog, restart_point, resumed, stream_rows
    from omics.evaluate.tasks import build_task_specs
    from omics.io import ensure_writable
    from omics.model import require_model_dir
    from omics.model_card import read_card

    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.out.suffix not in SUFFIXES:
        raise UserError(f"--out {args.out}: expected one of {', '.join(SUFFIXES)}")
    if ".xlsx" in (args.data.suffix, args.out.suffix) and not has_package("openpyxl"):
        raise UserError("spreadsheets (.xlsx) need openpyxl: pip install 'omics[sheets]' (or use .csv/.jsonl)")
    if args.resume and args.out.exists():
        raise UserError(f"{args.out} is finished; nothing to resume. Pass --overwrite to answer again.")
    ensure_writable(args.out, args.overwrite)
    total = sum(1 for _ in read_rows(args.data))  # checks every row before any answer is generated
    model = require_model_dir(args.model, "Pass the directory of a trained model (e.g. archive/models/stage2).")
    card = read_card(model)
    summary = training_tasks(args.train_data, card)
    specs = build_task_specs(summary) if summary else {}
    max_length = args.max_length or card.max_length
    backend = make_backend(args.backend, model, args.max_new_tokens, args.batch_tokens, args.dtype)
    settings = {"data": str(args.data.resolve()), "data_sha256": file_sha256(args.data),
                "model": str(model.resolve()), "model_files": model_fingerprint(model), "backend": backend.name,
                "max_new_tokens": args.max_new_tokens, "max_length": max_length, "dtype": args.dtype,
                "batch_tokens": default_batch_tokens(args.batch_tokens),  # batches shape the float rounding
                "train_data": str(args.train_data.resolve()) if args.train_data else None}
    results = ResultsLog(args.out.with_name(f".{args.out.name}.partial.jsonl"), settings)
    done = results.open(args.resume, args.overwrite)
    restart = restart_point(done)
    prompt_ids = PromptIds(backend.tokenizer, max_length)

    def prompt(row: dict) -> np.ndarray:
        return prompt_ids(str(row["input"]), str(row.get("system") or card.default_prompt))[0]

    def finish(row: dict, generation: Generation) -> dict:
        text = row["generated"] = generation.text
        if row.get("task") in specs:
            own_form = row.get("system") or not card.stage  # a row's own prompt, or no card: the answer's form
            tagged = "<answer>" in text if own_form else card.reasoning
            row["prediction"] = parse_prediction(extract_answer(text)[0] if tagged else text, specs[row["task"]])
        return row

    rows = islice(read_rows(args.data), restart, None)
    for answered in resumed(stream_rows(backend, rows, prompt, finish, total - restart), done - restart):
        results.append(answered)
    write_rows(args.out, results.rows)
    results.path.unlink()
    results.sidecar.unlink()
    print(f"{total} answers written to {args.out}")
    return total
