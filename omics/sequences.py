"""Molecule alphabets, detection and validation of one sequence line, and the paper's sequence tags."""

from __future__ import annotations

import re
from typing import Literal

Molecule = Literal["dna", "rna", "protein"]
MOLECULES: tuple[Molecule, ...] = ("dna", "rna", "protein")

IUPAC_AMBIGUITY = set("NRYSWKMBDHV")
DNA = set("ACGT") | IUPAC_AMBIGUITY
RNA = set("ACGU") | IUPAC_AMBIGUITY
PROTEIN = set("ACDEFGHIKLMNPQRSTVWY") | set("XBZUO*")
CORE_NUCLEOTIDES = set("ACGTUN")
# Every IUPAC code is also an amino-acid letter, so a line is called nucleic only when it is mostly A/C/G/T/U/N.
NUCLEIC_MIN_CORE_FRACTION = 0.9

TAG_PATTERN = re.compile(r"<(dna|rna|protein)>(.*?)<\1>", re.DOTALL)


def detect_molecule(sequence: str) -> Molecule | None:
    """Return the molecule type of an upper-case sequence, or None when no alphabet accepts it.

    Nucleic acids win when at least 90% of the letters are A/C/G/T/U/N; a line with U and no T is RNA, one
    without U is DNA. Otherwise (both T and U included: U is also selenocysteine) the protein alphabet
    (20 amino acids + X B Z U O *) decides.
    """
    if not sequence:
        return None
    letters = set(sequence)
    core = sum(1 for ch in sequence if ch in CORE_NUCLEOTIDES)
    if core >= NUCLEIC_MIN_CORE_FRACTION * len(sequence):
        if "U" in letters and "T" not in letters and letters <= RNA:
            return "rna"
        if "U" not in letters and letters <= DNA:
            return "dna"
    return "protein" if letters <= PROTEIN else None


def clean_line(line: str) -> str:
    """Normalise one input line: surrounding whitespace dropped, lower case accepted."""
    return line.strip().upper()


def wrap(sequence: str, molecule: Molecule) -> str:
    """The paper's tagging: `<dna>ACGT<dna>` (the closing tag has no slash, as in Biology-Instructions)."""
    return f"<{molecule}>{sequence}<{molecule}>"
