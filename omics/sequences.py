"""Molecule alphabets, detection and validation of one sequence line, and the paper's sequence tags.

What is a sequence line (`sequence_or_reason`): once its surrounding whitespace is stripped, only letters
(and `*`, the stop symbol); one case throughout, except soft-masked DNA/RNA (repeats in lower case); not one
of the words a column header uses (`sequence`, `protein`, ...); and every letter in the DNA, RNA or protein
alphabet. Anything else is text: a space inside, a digit or punctuation (`# comment`, `This is a header
line`, `ACGT-ACGT`), a mixed-case word (`Sequence`, `HelloWorld`). The protein alphabet holds 25 of the 26
letters (all but J), so a single all-capital English word is a valid protein string: beyond the header
words it cannot be told from a peptide by its letters and is read as one.
"""

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

TEXT = "text, not a sequence (spaces, digits, punctuation, mixed case or a column name)"
OUTSIDE_ALPHABETS = "letters outside the DNA, RNA and protein alphabets"
FASTA_HEADER = "FASTA header (only sequence lines are read)"
# column names and words that head a sequence list, each made of amino-acid letters only
HEADER_WORDS = frozenset({"SEQ", "SEQS", "SEQUENCE", "SEQUENCES", "PROTEIN", "PROTEINS", "PEPTIDE", "DNA", "RNA",
                          "NAME", "ID", "LABEL", "TARGET", "INPUT", "TEXT", "DATA", "HEADER"})

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
    core = sum(map(sequence.count, CORE_NUCLEOTIDES))
    if core >= NUCLEIC_MIN_CORE_FRACTION * len(sequence):
        if "U" in letters and "T" not in letters and letters <= RNA:
            return "rna"
        if "U" not in letters and letters <= DNA:
            return "dna"
    return "protein" if letters <= PROTEIN else None


def sequence_or_reason(line: str) -> tuple[str, Molecule] | str:
    """(upper-case sequence, molecule) of one line, or why it is not a sequence (see the module docstring)."""
    text = line.strip()
    if text.startswith(">"):
        return FASTA_HEADER
    if not text.replace("*", "").isalpha():
        return TEXT
    sequence = text.upper()
    molecule = detect_molecule(sequence)
    if sequence in HEADER_WORDS or (molecule == "protein" and not (text.isupper() or text.islower())):
        return TEXT
    return OUTSIDE_ALPHABETS if molecule is None else (sequence, molecule)


def wrap(sequence: str, molecule: Molecule) -> str:
    """The paper's tagging: `<dna>ACGT<dna>` (the closing tag has no slash, as in Biology-Instructions)."""
    return f"<{molecule}>{sequence}<{molecule}>"
