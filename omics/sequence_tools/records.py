"""The sequences of a .txt file (one per line, as Stage 1 reads them) or a FASTA file (multi-line records,
ids from the headers), each with the line it starts on. Unlike Stage 1, which skips and reports bad lines,
these commands owe one result per sequence: the first line that is not a sequence stops with file:line."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from omics.data.validate import DataError, DataReport, text_lines
from omics.sequences import OUTSIDE_ALPHABETS, Molecule, detect_molecule, sequence_or_reason


@dataclass(frozen=True)
class Record:
    id: str  # FASTA: the header's first word; .txt: the line number
    line: int
    sequence: str  # upper case
    molecule: Molecule


def _sequence(path: Path, lineno: int, line: str) -> str:
    got = sequence_or_reason(line)
    if isinstance(got, str):
        raise DataError(f"{path}:{lineno}: {got}: {line.strip()[:60]!r}; fix or remove the line")
    return got[0]


def _record(path: Path, name: str, lineno: int, sequence: str) -> Record:
    molecule = detect_molecule(sequence)
    if molecule is None:
        raise DataError(f"{path}:{lineno}: {OUTSIDE_ALPHABETS} in record {name!r}; fix or remove it")
    return Record(name, lineno, sequence, molecule)


def _fasta(path: Path, lines: Iterator[tuple[int, str]]) -> Iterator[Record]:
    header, name, parts = 0, "", []
    for lineno, line in chain(lines, [(0, ">")]):  # a sentinel header ends the last record
        if not line.lstrip().startswith(">"):
            parts.append(_sequence(path, lineno, line))
            continue
        if header:
            if not parts:
                raise DataError(f"{path}:{header}: FASTA record {name!r} has no sequence")
            yield _record(path, name, header, "".join(parts))
        if lineno:
            words = line.strip()[1:].split()
            if not words:
                raise DataError(f"{path}:{lineno}: FASTA header without an id; write one after '>'")
            header, name, parts = lineno, words[0], []


def read_records(path: str | Path) -> Iterator[Record]:
    """Every sequence of the file, in order; FASTA when its first non-blank line starts with '>'."""
    path = Path(path)
    lines = text_lines(path, DataReport(str(path)))
    first = next(lines, None)
    if first is None:
        raise DataError(f"{path}: no sequences (the file is empty)")
    lines = chain([first], lines)
    if first[1].lstrip().startswith(">"):
        yield from _fasta(path, lines)
    else:
        yield from (_record(path, str(n), n, _sequence(path, n, line)) for n, line in lines)
