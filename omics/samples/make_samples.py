"""Regenerate the bundled demo data: `python -m omics.samples.make_samples [OUT_DIR]`.

The embedded demo trains a tiny Llama for minutes on a CPU, so the data must be learnable from the
sequence alone: Stage 1 lines chain a few recurring motifs per molecule type (a Markov rule with point
mutations), and every Stage 2/3 label is a simple, exact function of the tagged sequence. Stdlib only and
seeded, so the committed files are byte-for-byte what this script writes.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

SEED = 241219191
SAMPLES_DIR = Path(__file__).resolve().parent
ALPHABETS = {"dna": "ACGT", "rna": "ACGU", "protein": "ACDEFGHIKLMNPQRSTVWY"}
HYDROPHOBIC = "AILMFVW"
OTHER_RESIDUES = "".join(a for a in ALPHABETS["protein"] if a not in HYDROPHOBIC)
NUCLEOTIDE_NAMES = {"A": "adenine", "C": "cytosine", "G": "guanine", "U": "uracil"}

# Stage 1: lines per file, mixed DNA:RNA:protein = 2:1:1 as in the paper.
PRETRAIN_FILES = {"stage1_train.txt": 600, "stage1_heldout.txt": 120}
# Stages 2-3: examples per task per file (five tasks, equal counts).
INSTRUCTION_FILES = {"stage2_train.jsonl": 300, "stage2_test.jsonl": 30, "stage3_train.jsonl": 80,
                     "stage2_valid.jsonl": 20, "stage3_valid.jsonl": 20}  # validation while training (the demo)

Example = tuple[str, str, str | float, str]  # input, output, label, reasoning


# ---------------------------------------------------------------- Stage 1: motif Markov chains


def _motif_chain(rng: random.Random, alphabet: str, n_motifs: int = 8) -> tuple[list[str], list[int]]:
    """A few motifs, each with a preferred successor on one cycle: structure a small model picks up fast."""
    motifs = ["".join(rng.choices(alphabet, k=rng.randint(5, 12))) for _ in range(n_motifs)]
    order = rng.sample(range(n_motifs), n_motifs)
    successor = [0] * n_motifs
    for j, i in enumerate(order):
        successor[i] = order[(j + 1) % n_motifs]
    return motifs, successor


def _pretrain_line(rng: random.Random, kind: str, chain: tuple[list[str], list[int]]) -> str:
    motifs, successor = chain
    alphabet = ALPHABETS[kind]
    target = rng.randint(60, 400)
    i = rng.randrange(len(motifs))
    seq = ""
    while len(seq) < target:
        seq += "".join(c if rng.random() > 0.03 else rng.choice(alphabet) for c in motifs[i])
        if rng.random() < 0.15:  # short random spacer between motifs
            seq += "".join(rng.choices(alphabet, k=rng.randint(1, 4)))
        i = successor[i] if rng.random() < 0.85 else rng.randrange(len(motifs))
    seq = seq[:target]
    if kind == "dna" and rng.random() < 0.08:  # assembly gaps, as in genome dumps
        start, run = rng.randrange(target - 10), rng.randint(1, 8)
        seq = seq[:start] + "N" * run + seq[start + run :]
    return seq


def make_pretrain(rng: random.Random, n_lines: int, chains: dict[str, tuple[list[str], list[int]]]) -> str:
    kinds = ["dna"] * (n_lines // 2) + ["rna"] * (n_lines // 4)
    kinds += ["protein"] * (n_lines - len(kinds))
    rng.shuffle(kinds)
    return "".join(_pretrain_line(rng, kind, chains[kind]) + "\n" for kind in kinds)


# ---------------------------------------------------------------- Stages 2-3: tasks


def _with_count(rng: random.Random, n: int, k: int, chosen: str, rest: str) -> str:
    """A length-n sequence with exactly k letters from `chosen`, the rest from `rest`, shuffled."""
    letters = rng.choices(chosen, k=k) + rng.choices(rest, k=n - k)
    rng.shuffle(letters)
    return "".join(letters)


def emp_gcrich(rng: random.Random, i: int) -> Example:
    n, positive = rng.randint(30, 80), i % 2 == 0
    k = round(n * (rng.uniform(0.65, 0.80) if positive else rng.uniform(0.20, 0.35)))
    seq = _with_count(rng, n, k, "GC", "AT")
    question = rng.choice(
        [
            "Is this DNA sequence GC-rich? <dna>{}<dna>",
            "<dna>{}<dna> Does this DNA sequence have a high GC content?",
            "Determine whether the following DNA sequence is GC-rich: <dna>{}<dna>",
        ]
    ).format(seq)
    label = "positive" if positive else "negative"
    side = "above" if positive else "below"
    reasoning = (
        f"The sequence has {k} G or C out of {n} bases ({100 * k / n:.2f}% GC), {side} 50%, "
        f"so it {'is' if positive else 'is not'} GC-rich."
    )
    return question, f"The sequence is {label} for high GC content.", label, reasoning


def gc_content(rng: random.Random, i: int) -> Example:
    n = rng.randint(30, 80)
    k = round(n * rng.uniform(0.2, 0.8))
    seq = _with_count(rng, n, k, "GC", "AT")
    question = rng.choice(
        [
            "What is the GC content of this DNA sequence? <dna>{}<dna>",
            "<dna>{}<dna> Calculate the GC content of this sequence as a percentage.",
        ]
    ).format(seq)
    label = round(100 * k / n, 2)
    reasoning = f"The sequence has {k} G or C out of {n} bases, so its GC content is {k}/{n} = {label:.2f}%."
    return question, f"The GC content of the sequence is {label:.2f}%.", label, reasoning


def ncrna_dominant(rng: random.Random, i: int) -> Example:
    n, base = rng.randint(30, 80), "ACGU"[i % 4]
    k = round(n * rng.uniform(0.5, 0.7))
    seq = _with_count(rng, n, k, base, "ACGU".replace(base, ""))
    question = rng.choice(
        [
            "Which nucleotide dominates this RNA sequence? <rna>{}<rna>",
            "<rna>{}<rna> What is the most frequent nucleotide in this RNA?",
        ]
    ).format(seq)
    name = NUCLEOTIDE_NAMES[base]
    counts = ", ".join(f"{b} {seq.count(b)}" for b in "ACGU")
    reasoning = (
        f"Counting nucleotides: {counts} out of {n}; {base} is the most frequent "
        f"({100 * k / n:.2f}%), so the dominant nucleotide is {name}."
    )
    return question, f"The dominant nucleotide of this RNA is {name}.", name, reasoning


def _sirna_token(rng: random.Random, base: str) -> str:
    """Plain nucleotides in lower case; modified ones as in the paper's data (mU, fC, dA, dT)."""
    if rng.random() > 0.25:
        return base.lower()
    prefix = rng.choice("mfd")
    return prefix + ("T" if prefix == "d" and base == "U" else base)


def sirna_efficiency(rng: random.Random, i: int) -> Example:
    n = rng.randint(19, 21)
    k = round(n * rng.uniform(0.15, 0.9))
    guide = _with_count(rng, n, k, "GC", "AU")
    target_core = guide[::-1].translate(str.maketrans("ACGU", "TGCA"))  # the DNA the guide pairs with
    target = "".join(rng.choices("ACGT", k=rng.randint(5, 10))) + target_core
    target += "".join(rng.choices("ACGT", k=rng.randint(5, 10)))
    sirna = " ".join(_sirna_token(rng, b) for b in guide)
    question = (
        f"<rna>{sirna}<rna> <dna>{target}<dna> "
        "How does the target RNA respond to siRNA in terms of mRNA remaining percentage?"
    )
    gc = 100 * k / n
    label = round(min(100.0, max(0.0, 100 - gc + rng.uniform(-3, 3))), 2)
    reasoning = (
        f"The siRNA has {k} G or C out of {n} nucleotides ({gc:.2f}% GC, modifications aside); here the "
        f"remaining mRNA falls as siRNA GC content rises, to about 100 - {gc:.2f} = {100 - gc:.2f}%."
    )
    output = f"The sequence is associated with an mRNA remaining percentage of {label:.2f}."
    return question, output, label, reasoning


def solubility_hydrophobic(rng: random.Random, i: int) -> Example:
    n, positive = rng.randint(30, 80), i % 2 == 0
    h = round(n * (rng.uniform(0.10, 0.25) if positive else rng.uniform(0.55, 0.70)))
    seq = _with_count(rng, n, h, HYDROPHOBIC, OTHER_RESIDUES)
    question = rng.choice(
        [
            "Is this protein soluble? <protein>{}<protein>",
            "<protein>{}<protein> Predict the solubility of this protein.",
        ]
    ).format(seq)
    label = "positive" if positive else "negative"
    reasoning = (
        f"The protein has {h} hydrophobic residues (A, I, L, M, F, V, W) out of {n} ({100 * h / n:.2f}%), "
        f"a {'low' if positive else 'high'} fraction, "
        f"so it is likely {'soluble' if positive else 'insoluble'}."
    )
    return question, f"The protein is predicted to be {label} for solubility.", label, reasoning


TASKS: dict[str, Callable[[random.Random, int], Example]] = {
    "emp-gcrich": emp_gcrich,
    "gc_content": gc_content,
    "NoncodingRNAFamily-dominant": ncrna_dominant,
    "sirnaEfficiency-demo": sirna_efficiency,
    "Solubility-hydrophobic": solubility_hydrophobic,
}


def make_instructions(rng: random.Random, per_task: int, reasoning: bool, seen: set[str]) -> str:
    """Equal counts per task and per class (the example index picks the class), shuffled.

    `seen` keeps every input unique across files, so no test question leaks into training.
    """
    records = []
    for task, make in TASKS.items():
        count = 0
        while count < per_task:
            question, output, label, why = make(rng, count)
            if question in seen:
                continue
            seen.add(question)
            count += 1
            if reasoning:
                output = f"<reasoning>{why}</reasoning> <answer>{output}</answer>"
            records.append({"input": question, "output": output, "label": label, "task": task})
    rng.shuffle(records)
    return "".join(json.dumps(r) + "\n" for r in records)


def main(out_dir: Path = SAMPLES_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    chain_rng = random.Random(f"{SEED}-motifs")
    chains = {kind: _motif_chain(chain_rng, alphabet) for kind, alphabet in ALPHABETS.items()}
    texts = {
        name: make_pretrain(random.Random(f"{SEED}-{name}"), n, chains) for name, n in PRETRAIN_FILES.items()
    }
    seen: set[str] = set()
    for name, per_task in INSTRUCTION_FILES.items():
        rng = random.Random(f"{SEED}-{name}")
        texts[name] = make_instructions(rng, per_task, name.startswith("stage3"), seen)
    paths = []
    for name, text in texts.items():
        (out_dir / name).write_text(text, encoding="utf-8", newline="\n")
        paths.append(out_dir / name)
    return paths


if __name__ == "__main__":
    for path in main(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLES_DIR):
        print(f"{path}: {sum(1 for _ in path.open())} lines, {path.stat().st_size:,} bytes")
