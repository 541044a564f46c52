"""The bundled demo data: well-formed, labels that follow from the sequences, small, reproducible."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from omics.samples import make_samples

SAMPLES = Path(make_samples.__file__).parent
INSTRUCTION_FILES = ["stage2_train.jsonl", "stage2_test.jsonl", "stage3_train.jsonl", "stage2_valid.jsonl",
                     "stage3_valid.jsonl"]
TASKS = [
    "emp-gcrich",
    "gc_content",
    "NoncodingRNAFamily-dominant",
    "sirnaEfficiency-demo",
    "Solubility-hydrophobic",
]
CONTENT = {
    "dna": re.compile(r"[ACGTN]+"),
    "rna": re.compile(
        r"[ACGU]+|(?:[acgu]|[mfd][ACGUT])(?: (?:[acgu]|[mfd][ACGUT]))*"
    ),  # plain, or siRNA tokens
    "protein": re.compile(r"[ACDEFGHIKLMNPQRSTVWY]+"),
}
REASONING = re.compile(r"<reasoning>(.+)</reasoning> <answer>(.+)</answer>")
NUMBER = re.compile(r"-?\d+\.?\d*")
WORDS = {"positive", "negative", "adenine", "cytosine", "guanine", "uracil"}


def _records(name: str) -> list[dict]:
    return [json.loads(line) for line in (SAMPLES / name).read_text().splitlines()]


def _answer(record: dict) -> str:
    if not record["output"].startswith("<reasoning>"):
        return record["output"]
    match = REASONING.fullmatch(record["output"])
    assert match, record["output"]
    return match.group(2)


def _sequences(text: str) -> list[tuple[str, str]]:
    """(molecule, content) for every `<x>…<x>` pair; any unpaired or mismatched tag fails."""
    tags = re.findall(r"</?(dna|rna|protein)>", text)
    pairs = re.findall(r"<(dna|rna|protein)>(.*?)<\1>", text)
    assert "</" not in text and len(tags) == 2 * len(pairs), text
    return pairs


@pytest.mark.parametrize("name", INSTRUCTION_FILES)
def test_instruction_lines_are_well_formed(name: str) -> None:
    records = _records(name)
    counts = Counter(r["task"] for r in records)
    assert sorted(counts) == sorted(TASKS) and len(set(counts.values())) == 1
    for r in records:
        assert list(r) == ["input", "output", "label", "task"]
        pairs = _sequences(r["input"])
        assert pairs and all(CONTENT[kind].fullmatch(seq) for kind, seq in pairs), r["input"]
        assert len(r["input"]) + len(r["output"]) < (500 if name.startswith("stage3") else 300)
        assert name.startswith("stage3") == r["output"].startswith("<reasoning>")


@pytest.mark.parametrize("name", INSTRUCTION_FILES)
def test_labels_are_what_the_output_says(name: str) -> None:
    for r in _records(name):
        answer = _answer(r)
        if isinstance(r["label"], float):
            assert float(NUMBER.search(answer).group()) == r["label"], r
        else:
            assert [w for w in re.findall(r"\w+", answer.lower()) if w in WORDS] == [r["label"]], r


@pytest.mark.parametrize("name", INSTRUCTION_FILES)
def test_labels_follow_from_the_sequence(name: str) -> None:
    for r in _records(name):
        seqs = dict(_sequences(r["input"]))
        label, task = r["label"], r["task"]
        if task in ("emp-gcrich", "gc_content"):
            gc = 100 * sum(c in "GC" for c in seqs["dna"]) / len(seqs["dna"])
            expected = round(gc, 2) if task == "gc_content" else ("positive" if gc > 50 else "negative")
            assert label == expected
        elif task == "NoncodingRNAFamily-dominant":
            top = Counter(seqs["rna"]).most_common(1)[0][0]
            assert label == make_samples.NUCLEOTIDE_NAMES[top]
        elif task == "sirnaEfficiency-demo":
            bases = [token[-1].upper() for token in seqs["rna"].split()]
            assert 19 <= len(bases) <= 21
            assert label == pytest.approx(100 - 100 * sum(b in "GC" for b in bases) / len(bases), abs=3.01)
        else:
            hydrophobic = sum(c in "AILMFVW" for c in seqs["protein"]) / len(seqs["protein"])
            assert label == ("positive" if hydrophobic < 0.4 else "negative")


def test_binary_classes_are_balanced_and_test_questions_unseen() -> None:
    test = _records("stage2_test.jsonl")
    for task in ("emp-gcrich", "Solubility-hydrophobic"):
        assert Counter(r["label"] for r in test if r["task"] == task) == {"positive": 15, "negative": 15}
    train = {r["input"] for name in ("stage2_train.jsonl", "stage3_train.jsonl") for r in _records(name)}
    valid = {r["input"] for name in ("stage2_valid.jsonl", "stage3_valid.jsonl") for r in _records(name)}
    assert not train & {r["input"] for r in test} and not valid & (train | {r["input"] for r in test})


@pytest.mark.parametrize("name", ["stage1_train.txt", "stage1_heldout.txt"])
def test_pretraining_lines(name: str) -> None:
    lines = (SAMPLES / name).read_text().splitlines()
    kinds = Counter()
    for line in lines:
        assert 60 <= len(line) <= 400
        kind = "rna" if "U" in line else "dna" if set(line) <= set("ACGTN") else "protein"
        assert CONTENT[kind].fullmatch(line), line
        kinds[kind] += 1
    assert abs(kinds["dna"] / len(lines) - 0.5) < 0.05 and abs(kinds["protein"] / len(lines) - 0.25) < 0.05


def test_samples_are_small_and_reproducible(tmp_path: Path) -> None:
    data = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".txt", ".jsonl"))
    assert [p.name for p in data] == sorted([*INSTRUCTION_FILES, "stage1_train.txt", "stage1_heldout.txt"])
    assert sum(p.stat().st_size for p in data) < 1_000_000
    make_samples.main(tmp_path)
    for path in data:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), f"{path.name}: rerun make_samples"
