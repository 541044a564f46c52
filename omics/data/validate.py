"""Streaming readers that validate every line and account for every skipped one.

Nothing here holds a file in memory: lines are read one by one (as bytes, so a non-UTF-8 line is named by
its number), and a `DataReport` keeps counts plus the first few bad line numbers per reason.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from omics.errors import UserError
from omics.sequences import Molecule, clean_line, detect_molecule

MAX_EXAMPLES_PER_REASON = 20


class DataError(UserError):
    """A data file that cannot be used; the message names the file (and line) and what to do."""


@dataclass
class DataReport:
    """What a reader saw: the file, counts, and where the skipped lines are."""

    path: str
    lines: int = 0
    blank: int = 0
    valid: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[int | str]] = field(default_factory=dict)
    molecules: Counter = field(default_factory=Counter)
    residues: Counter = field(default_factory=Counter)
    tasks: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)  # e.g. examples shortened, windows cut

    def bad(self, lineno: int | str, reason: str) -> None:
        self.skipped[reason] += 1
        lines = self.examples.setdefault(reason, [])
        if len(lines) < MAX_EXAMPLES_PER_REASON:
            lines.append(lineno)

    def drop(self, lineno: int | str, reason: str, task: str | None = None) -> None:
        """A line that was read as valid but is then left out (e.g. too long): count it as skipped instead."""
        self.valid -= 1
        if task is not None:
            self.tasks[task] -= 1
        self.bad(lineno, reason)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "lines": self.lines,
            "blank_lines": self.blank,
            "valid": self.valid,
            "skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(self.skipped),
            "first_skipped_lines": self.examples,
            "molecules": dict(self.molecules),
            "residues": dict(self.residues),
            "tasks": dict(self.tasks),
            "notes": dict(self.notes),
        }

    def summary(self) -> str:
        text = f"{self.path}: {self.valid:,} valid of {self.lines:,} lines"
        if self.blank:
            text += f", {self.blank:,} blank"
        for reason, count in self.skipped.most_common():
            text += f"\n  skipped {count:,}: {reason} (first lines: {self.examples[reason][:8]})"
        for note, count in self.notes.most_common():
            text += f"\n  {note}: {count:,}"
        return text


def _lines(path: Path, report: DataReport) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise DataError(f"data file {path} not found (pass the path of an existing file)")
    with path.open("rb") as handle, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                         desc=f"read {path.name}", leave=False) as progress:
        for lineno, raw in enumerate(handle, 1):
            progress.update(len(raw))
            report.lines = lineno
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}:{lineno}: not UTF-8 text ({err.reason} at byte {err.start}); "
                    "is this a compressed or binary file? Decompress it or convert it to UTF-8."
                ) from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not data
            if not line.strip():
                report.blank += 1
                continue
            yield lineno, line


def _finish(report: DataReport, what: str) -> None:
    if report.valid == 0:
        raise DataError(f"{report.path}: no valid {what} in {report.lines:,} lines\n{report.summary()}")


def read_sequences(path: str | Path, report: DataReport) -> Iterator[tuple[str, Molecule]]:
    """Yield (upper-case sequence, molecule) per valid line of a one-sequence-per-line .txt file."""
    path = Path(path)
    for lineno, line in _lines(path, report):
        sequence = clean_line(line)
        molecule = detect_molecule(sequence)
        if molecule is None:
            reason = "FASTA header (only sequence lines are read)" if sequence.startswith(">") else (
                "letters outside the DNA, RNA and protein alphabets"
            )
            report.bad(lineno, reason)
            continue
        report.valid += 1
        report.molecules[molecule] += 1
        report.residues[molecule] += len(sequence)
        yield sequence, molecule
    _finish(report, "sequence")


def _label_problem(label: Any) -> str | None:
    """None when the label is a number, bool, non-empty string, list of strings, or object of numbers."""
    if label is None:
        return "label is null"
    if isinstance(label, bool | str):
        return None if label != "" else "label is an empty string"
    if isinstance(label, int | float):
        return None if math.isfinite(label) else "label is not a finite number"
    if isinstance(label, list):
        ok = all(isinstance(x, str) or (isinstance(x, int | float) and math.isfinite(x)) for x in label)
        return None if ok else "label list must hold strings or finite numbers"
    if isinstance(label, dict):
        ok = label and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                           for v in label.values())
        return None if ok else "label object must map names to finite numbers"
    return f"label has unsupported type {type(label).__name__}"


def read_instructions(path: str | Path, report: DataReport, on_bad_line: str = "skip") -> Iterator[dict]:
    """Yield validated {input, output, label, task, line} records of a .jsonl file.

    `on_bad_line="stop"` raises at the first bad line; "skip" reports it and goes on.
    """
    path = Path(path)
    for lineno, line in _lines(path, report):
        try:
            record = json.loads(line)
            problem = None if isinstance(record, dict) else "line is not a JSON object"
        except json.JSONDecodeError as err:
            record, problem = None, f"invalid JSON ({err.msg})"
        if problem is None:
            missing = [k for k in ("input", "output", "label", "task") if k not in record]
            problem = f"missing field(s) {', '.join(missing)}" if missing else None
        if problem is None:
            for key in ("input", "output", "task"):
                if not isinstance(record[key], str) or not record[key].strip():
                    problem = f"field {key!r} must be a non-empty string"
                    break
            else:
                problem = _label_problem(record["label"])
        if problem is not None:
            if on_bad_line == "stop":
                raise DataError(
                    f"{path}:{lineno}: {problem}. Fix the line, or pass --set on_bad_line=skip to skip "
                    "bad lines with a report."
                )
            report.bad(lineno, problem)
            continue
        report.valid += 1
        report.tasks[record["task"]] += 1
        yield {"input": record["input"], "output": record["output"], "label": record["label"],
               "task": record["task"], "line": lineno}
    _finish(report, "example")
