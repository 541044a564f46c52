"""Streaming readers that validate every line and account for every skipped one.

Nothing here holds a file in memory: lines are read one by one (as bytes, so a non-UTF-8 line is named by
its number), and a `DataReport` keeps counts plus the first few bad line numbers per reason. Text is UTF-8
(a byte-order mark is skipped) or UTF-16/UTF-32 with a byte-order mark; Windows line endings read as any.
"""

from __future__ import annotations

import codecs
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from tqdm import tqdm

from omics.errors import UserError
from omics.sequences import OUTSIDE_ALPHABETS, Molecule, detect_molecule, sequence_or_reason

MAX_EXAMPLES_PER_REASON = 20
# UTF-32 first: its little-endian mark starts with UTF-16's
BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class DataError(UserError):
    """A data file that cannot be used; the message names the file (and line) and what to do."""


@dataclass
class DataReport:
    """What a reader saw: the file, counts, and where the skipped lines are."""

    path: str
    encoding: str = "utf-8"
    format: str = "lines"  # or "fasta" (Stage 1)
    records: int = 0  # FASTA records, valid or not
    lines: int = 0
    blank: int = 0
    valid: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[int | str]] = field(default_factory=dict)
    molecules: Counter = field(default_factory=Counter)
    residues: Counter = field(default_factory=Counter)
    tasks: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)  # e.g. examples shortened, windows cut
    shortened: defaultdict = field(default_factory=lambda: defaultdict(Counter))  # task → what was cut → n
    warnings: list[str] = field(default_factory=list)  # e.g. tasks too small to score reliably

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
            "encoding": self.encoding,
            "format": self.format,
            **({"records": self.records} if self.format == "fasta" else {}),
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
            "shortened": {task: dict(counts) for task, counts in sorted(self.shortened.items())},
            "warnings": self.warnings,
        }

    def summary(self) -> str:
        if self.format == "fasta":
            text = f"{self.path}: {self.valid:,} valid of {self.records:,} FASTA records ({self.lines:,} lines)"
        else:
            text = f"{self.path}: {self.valid:,} valid of {self.lines:,} lines"
        if self.encoding != "utf-8":
            text += f", {self.encoding.upper()}"
        if self.blank:
            text += f", {self.blank:,} blank"
        for reason, count in self.skipped.most_common():
            text += f"\n  skipped {count:,}: {reason} (first lines: {self.examples[reason][:8]})"
        for note, count in self.notes.most_common():
            text += f"\n  {note}: {count:,}"
        for warning in self.warnings:
            text += f"\n  warning: {warning}"
        return text


def _encoding(path: Path) -> str:
    """UTF-8 unless a UTF-16/UTF-32 byte-order mark says otherwise."""
    with path.open("rb") as handle:
        head = handle.read(4)
    return next((name for mark, name in BYTE_ORDER_MARKS if head.startswith(mark)), "utf-8")


def _decoded(path: Path, encoding: str) -> Iterator[tuple[int, str, int]]:
    """(line number, text, bytes read) per line; a UTF-8 line that does not decode is named (UTF-16/32 decode
    in blocks, so there the error says how many lines were read)."""
    if encoding == "utf-8":
        with path.open("rb") as handle:
            for lineno, raw in enumerate(handle, 1):
                try:
                    yield lineno, raw.decode("utf-8"), len(raw)
                except UnicodeDecodeError as err:
                    raise DataError(
                        f"{path}:{lineno}: not UTF-8 text ({err.reason} at byte {err.start}); "
                        "is this a compressed or binary file? Decompress it or convert it to UTF-8."
                    ) from None
        return
    width = 2 if encoding == "utf-16" else 4
    lineno = 0
    try:
        with path.open(encoding=encoding, newline="") as handle:
            for lineno, line in enumerate(handle, 1):
                yield lineno, line, width * len(line)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid {encoding.upper()} text ({err.reason}; {lineno:,} lines read before "
                        "it); convert the file to UTF-8.") from None


def text_lines(path: Path, report: DataReport) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank line of a text file: UTF-8, or UTF-16/32 by byte-order mark."""
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a file; pass a file")
    if not path.is_file():
        raise DataError(f"data file {path} not found (pass the path of an existing file)")
    report.encoding = _encoding(path)
    with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"read {path.name}",
              leave=False) as progress:
        for lineno, line, size in _decoded(path, report.encoding):
            progress.update(size)
            report.lines = lineno
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark is not data
            if "\x00" in line:
                raise DataError(f"{path}:{lineno}: NUL bytes: UTF-16/UTF-32 text without a byte-order mark, or a "
                                "binary file. Convert it to UTF-8 (e.g. iconv -f UTF-16LE -t UTF-8).")
            if not line.strip():
                report.blank += 1
                continue
            yield lineno, line


def _finish(report: DataReport, what: str) -> None:
    if report.valid == 0:
        raise DataError(f"{report.path}: no valid {what} in {report.lines:,} lines\n{report.summary()}")


def _fasta_records(lines: Iterator[tuple[int, str]], report: DataReport
                   ) -> Iterator[tuple[int, tuple[str, Molecule] | str]]:
    """(header line, (sequence, molecule)) per FASTA record, its lines joined; or (line, reason) for a record
    refused because one of its lines is not a sequence (a record with a hole would be misread)."""
    report.format = "fasta"
    header, parts, problem = 0, [], None
    for lineno, line in chain(lines, [(0, ">")]):  # a sentinel header ends the last record
        if not line.lstrip().startswith(">"):
            got = sequence_or_reason(line)
            if isinstance(got, str):
                problem = problem or (lineno, got)
            else:
                parts.append(got[0])
            continue
        if header:
            report.records += 1
            if problem:
                yield problem
            elif not parts:
                yield header, "FASTA record without a sequence"
            else:
                sequence = "".join(parts)
                molecule = detect_molecule(sequence)
                yield header, (sequence, molecule) if molecule else OUTSIDE_ALPHABETS
        header, parts, problem = lineno, [], None


def read_sequences(path: str | Path, report: DataReport) -> Iterator[tuple[str, Molecule]]:
    """Yield (upper-case sequence, molecule) per valid line, or per FASTA record when the file is FASTA (its
    first non-blank line starts with '>'); text lines and bad records are skipped and reported."""
    path = Path(path)
    lines = text_lines(path, report)
    first = next(lines, None)
    lines = chain([first] if first else [], lines)
    if first is not None and first[1].lstrip().startswith(">"):
        entries = _fasta_records(lines, report)
    else:
        entries = ((n, sequence_or_reason(line)) for n, line in lines)
    for lineno, got in entries:
        if isinstance(got, str):
            report.bad(lineno, got)
            continue
        sequence, molecule = got
        report.valid += 1
        report.molecules[molecule] += 1
        report.residues[molecule] += len(sequence)
        yield sequence, molecule
    _finish(report, "FASTA record" if report.format == "fasta" else "sequence")


def _spells_non_finite(text: str) -> bool:
    """How pandas and spreadsheets write a missing number: "NaN", "inf", "-Infinity"."""
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


def _label_problem(label: Any) -> str | None:
    """None when the label is a number, bool, non-empty string, list of strings, or object of numbers."""
    if label is None:
        return "label is null"
    if isinstance(label, str) and _spells_non_finite(label):
        return "label is not a finite number (NaN or infinity written as text)"
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
    for lineno, line in text_lines(path, report):
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
