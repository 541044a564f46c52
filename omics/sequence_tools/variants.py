"""Variants from a VCF-like TSV, checked against their sequence, as the two windows a model scores.

Columns (a header row; a leading `#` on it is ignored, other columns are kept): `pos` (1-based: the first
base of the sequence is 1, as in VCF), `ref`, `alt`, and either `sequence` (the sequence inline) or `fasta` +
`chrom` (a FASTA file, relative paths from the TSV's folder, and the record id = the header's first word).
An `alt` listing several alleles (`A,T`) is split into one variant per allele. Symbolic or missing
alleles (`<DEL>`, `*`, `.`) are refused by line: they name no sequence to score.

The two windows share the same flanks, `window // 2` bases before `pos` and after the reference allele
(fewer at the sequence's ends): ref window = left + ref + right, alt window = left + alt + right. An indel
therefore compares windows of different lengths: each extra base adds its own (negative) log-likelihood,
so insertions lean negative and deletions positive by about the model's per-base cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from omics.data.validate import DataError
from omics.sequence_tools.records import read_records
from omics.sequences import sequence_or_reason

REQUIRED = ("pos", "ref", "alt")
ALLELE_LETTERS = frozenset("ACGTUN")


@dataclass(frozen=True)
class Variant:
    row: dict[str, str]  # the input row, `alt` one allele
    line: int
    ref_window: str
    alt_window: str
    start: int  # the windows' first base, 1-based
    end: int  # the ref window's last base, 1-based


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of the TSV, the header checked; blank lines skipped."""
    if not path.is_file():
        raise DataError(f"variants file {path} not found (pass the path of an existing TSV)")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        lines = (line for line in enumerate(handle, 1) if line[1].strip())
        header = next(lines, (1, ""))[1].rstrip("\r\n").removeprefix("#").split("\t")
        missing = [c for c in REQUIRED if c not in header]
        if "sequence" not in header and not {"fasta", "chrom"} <= set(header):
            missing.append("sequence (or fasta and chrom)")
        if missing:
            raise DataError(f"{path}:1: header lacks column(s) {', '.join(missing)}; the header is tab-separated "
                            "pos, ref, alt and either sequence or fasta + chrom")
        for lineno, line in lines:
            cells = line.rstrip("\r\n").split("\t")
            if len(cells) != len(header):
                raise DataError(f"{path}:{lineno}: {len(cells)} tab-separated fields, the header has {len(header)}")
            yield lineno, dict(zip(header, cells, strict=True))


def _fasta_path(path: Path, row: dict[str, str]) -> Path:
    fasta = Path(row["fasta"])
    return fasta if fasta.is_absolute() else path.parent / fasta


def references(path: str | Path) -> dict[tuple[Path, str], str]:
    """The FASTA records the variants of the TSV name (only those, each held in memory), by (file, id)."""
    path = Path(path)
    wanted: dict[Path, dict[str, int]] = {}  # FASTA → chrom → the first TSV line naming it
    for lineno, row in _rows(path):
        if not row.get("sequence") and not (row.get("fasta") and row.get("chrom")):
            raise DataError(f"{path}:{lineno}: neither a sequence nor fasta + chrom; fill one in")
        if not row.get("sequence"):
            fasta = _fasta_path(path, row)
            if not fasta.is_file():
                raise DataError(f"{path}:{lineno}: fasta {row['fasta']}: no such file ({fasta}); check the path "
                                "(relative paths start from the TSV's folder)")
            wanted.setdefault(fasta, {}).setdefault(row["chrom"], lineno)
    genomes = {(fasta, r.id): r.sequence for fasta, ids in wanted.items()
               for r in read_records(fasta) if r.id in ids}
    for fasta, ids in wanted.items():
        if absent := sorted((line, i) for i, line in ids.items() if (fasta, i) not in genomes):
            line, chrom = absent[0]
            raise DataError(f"{path}:{line}: chrom {chrom} is not a record of {fasta} (chrom names a FASTA header's "
                            "first word)")
    return genomes


def _allele(path: Path, lineno: int, column: str, value: str) -> str:
    allele = value.strip().upper()
    if not allele or allele in (".", "*") or allele.startswith("<"):
        raise DataError(f"{path}:{lineno}: {column} {value!r} is a symbolic or missing allele; only bases are scored")
    if not set(allele) <= ALLELE_LETTERS:
        raise DataError(f"{path}:{lineno}: {column} {value!r} holds letters other than A, C, G, T, U, N")
    return allele


def read_variants(path: str | Path, window: int, genomes: dict[tuple[Path, str], str]) -> Iterator[Variant]:
    """Every variant of the TSV (several alt alleles: one each), checked against its sequence (inline, or in
    `genomes`, from `references`)."""
    path = Path(path)
    if window < 2:
        raise DataError(f"--window must be at least 2 bases (context on each side of the allele), got {window}")
    for lineno, row in _rows(path):
        if row.get("sequence"):
            got, where = sequence_or_reason(row["sequence"]), "the row's sequence"
            if isinstance(got, str):
                raise DataError(f"{path}:{lineno}: the sequence column is {got}")
            sequence = got[0]
        else:
            sequence, where = genomes[_fasta_path(path, row), row["chrom"]], f"{row['chrom']} of {row['fasta']}"
        ref = _allele(path, lineno, "ref", row["ref"])
        try:
            start = int(row["pos"]) - 1
        except ValueError:
            raise DataError(f"{path}:{lineno}: pos {row['pos']!r} is not a whole number (1-based position)") from None
        if start < 0 or start + len(ref) > len(sequence):
            raise DataError(f"{path}:{lineno}: pos {row['pos']} with ref {ref} lies outside {where} "
                            f"({len(sequence):,} bases; pos is 1-based)")
        if sequence[start : start + len(ref)] != ref:
            raise DataError(f"{path}:{lineno}: ref {ref} does not match {where} at pos {row['pos']} "
                            f"({sequence[start : start + len(ref)]}); check the position (1-based) and the reference")
        left, right = max(0, start - window // 2), min(len(sequence), start + len(ref) + window // 2)
        for alt in row["alt"].split(","):
            alt = _allele(path, lineno, "alt", alt)
            if alt == ref:
                raise DataError(f"{path}:{lineno}: alt {alt} equals ref: not a variant")
            yield Variant({**row, "alt": alt}, lineno, sequence[left:right],
                          sequence[left:start] + alt + sequence[start + len(ref) : right], left + 1, right)
