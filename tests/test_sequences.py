"""Molecule detection on tricky lines, and the paper's tags."""

from __future__ import annotations

import pytest

from omics.sequences import (
    DNA,
    FASTA_HEADER,
    IUPAC_AMBIGUITY,
    OUTSIDE_ALPHABETS,
    PROTEIN,
    RNA,
    TAG_PATTERN,
    TEXT,
    detect_molecule,
    sequence_or_reason,
    wrap,
)


def detect(line: str):
    """What a reader does with one raw line: its molecule, or None."""
    got = sequence_or_reason(line)
    return None if isinstance(got, str) else got[1]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("ACGT", "dna"),
        ("GATTACA", "dna"),
        ("NNNN", "dna"),  # all unknown bases is still nucleic
        ("ACGTNACGTACGTNACGTAC", "dna"),  # N inside
        ("ACGTNACGTACGTRACGTAC", "dna"),  # 1 IUPAC code in 20 letters: 95% core, still DNA
        ("ACGTACGTAR", "dna"),  # exactly 90% core: the rule is >=
        ("ACGUACGU", "rna"),
        ("AUGGCUUAA", "rna"),
        ("ACGUUUUUUD", "rna"),  # U, no T, one IUPAC code at 90%
        ("acgt", "dna"),  # lower case is normalised
        ("  acguacgu \r\n", "rna"),  # whitespace and CRLF stripped
        ("AcGt", "dna"),
    ],
)
def test_nucleic_acids(line, expected):
    assert detect(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "MACGTKLV",  # starts with A/C/G/T letters but is a protein: 50% core
        "MACGTKLVAAG",
        "MSTNPKPQRKTKRNTNRRPQDVKFPGG",
        "MKV*",  # stop codon symbol
        "MKVLAAGIT*",
        "mkvlaagit",  # lower-case protein
        "XBZUO",  # extended amino-acid letters
    ],
)
def test_proteins(line):
    assert detect(line) == "protein"


def test_ninety_percent_rule_short_iupac_only_line_is_protein():
    """Every IUPAC ambiguity code is also an amino-acid letter, and the nucleic call needs >=90% A/C/G/T/U/N.

    So a short line made only of IUPAC codes (no core base at all) is a protein, and a short DNA line with
    two ambiguity codes in 12 letters (83% core) is called protein too: the rule prefers protein when unsure.
    """
    assert IUPAC_AMBIGUITY <= PROTEIN
    assert detect("RYSWKM") == "protein"
    assert detect("KMRY") == "protein"
    assert detect("ACGTNNRYACGT") == "protein"  # 10/12 core < 90%
    assert detect("ACGTACGTRY") == "protein"  # 8/10 core < 90%
    assert detect("ACGTACGTAR") == "dna"  # 9/10 core = 90%


def test_both_t_and_u_is_not_nucleic():
    """A line with both T and U is neither DNA nor RNA; every letter is an amino acid (U = selenocysteine), so
    it is called protein. (The docstring's "anything else nucleic is DNA" does not apply: U is not DNA.)"""
    assert detect("ACGTU") == "protein"
    assert detect("ACGTUACGTU") == "protein"
    assert detect("ACGTUJ") is None  # J is in no alphabet


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "1234",
        "ACGT1",
        "AC GT",  # inner space
        "ACGT-ACGT",  # alignment gap
        "ACGT.",
        "hello, world!",
        "\x00\x01\x02\xff",
        ">seq1 some description",  # FASTA header
        "JJJJ",  # J is not an amino acid here
    ],
)
def test_junk_is_none(line):
    assert detect(line) is None


def test_detect_expects_upper_case():
    assert detect_molecule("acgt") is None
    assert detect("acgt") == "dna"


def test_alphabets():
    assert "U" not in DNA and "T" not in RNA
    assert {"*", "X", "U", "O"} <= PROTEIN
    assert set("ACGTN") <= DNA and set("ACGUN") <= RNA


@pytest.mark.parametrize("molecule", ["dna", "rna", "protein"])
def test_wrap_and_tag_pattern(molecule):
    tagged = wrap("ACGU", molecule)
    assert tagged == f"<{molecule}>ACGU<{molecule}>"  # closing tag has no slash
    match = TAG_PATTERN.fullmatch(tagged)
    assert match is not None and match.group(1) == molecule and match.group(2) == "ACGU"


def test_wrap_spelling():
    assert wrap("ACGT", "dna") == "<dna>ACGT<dna>"
    assert TAG_PATTERN.findall("x <dna>AC<dna> y <protein>MK<protein>") == [("dna", "AC"), ("protein", "MK")]
    assert TAG_PATTERN.search("<dna>AC<rna>") is None  # tags must match


@pytest.mark.parametrize("line", [
    "This is a header line", "# comment", "HELLO WORLD", "hello, world", "Sequence", "sequence", "SEQUENCE",
    "protein", "HelloWorld", "MkVlAaG", "ACGT-ACGT", "1 acgtacgt acgt", "ACGT.", "*",
])
def test_text_lines_are_not_sequences(line):
    assert sequence_or_reason(line) == TEXT


@pytest.mark.parametrize("line, expected", [
    ("ACGTacgtnnACGT", ("ACGTACGTNNACGT", "dna")),  # soft-masked DNA keeps its mixed case
    ("mkvlaag", ("MKVLAAG", "protein")),
    ("MKV*", ("MKV*", "protein")),
    ("HELLOWORLD", ("HELLOWORLD", "protein")),  # the documented limit: 25 of 26 letters are amino acids
    ("MKJLV", OUTSIDE_ALPHABETS),
    (">sp|P1", FASTA_HEADER),
])
def test_sequence_or_reason(line, expected):
    assert sequence_or_reason(line) == expected
