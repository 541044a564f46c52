"""What a sequence vocabulary buys on the user's data: residues per token before and after, per molecule, the
Stage 1 and Stage 2 tokens it saves, and the text whose tokens change."""

from __future__ import annotations

from collections import Counter
from itertools import islice
from pathlib import Path
from string import ascii_uppercase
from typing import Any

from transformers import PreTrainedTokenizerBase

from omics.data.validate import DataReport, read_instructions, read_sequences
from omics.sequences import Molecule
from omics.vocab.learn import TextGuard, encode, words_containing

STAGE2_ROWS = 2000  # instruction rows measured: enough for the share of sequence tokens to settle
CHECKED_WORD_LETTERS = 4  # every all-capitals word of this many letters is checked (456,976 words)
SHOWN_WORDS = 20


def tokens_per_molecule(tokenizers: dict[str, PreTrainedTokenizerBase],
                        sequences: dict[Molecule, list[str]]) -> dict[str, dict[str, Any]]:
    """Per molecule: residues, tokens under each tokenizer, residues per token and the token reduction."""
    table = {}
    for molecule, texts in sorted(sequences.items()):
        row: dict[str, Any] = {"sequences": len(texts), "residues": sum(map(len, texts))}
        for name, tokenizer in tokenizers.items():
            row[f"tokens_{name}"] = sum(map(len, encode(tokenizer, texts)))
            row[f"residues_per_token_{name}"] = round(row["residues"] / max(row[f"tokens_{name}"], 1), 3)
        row["token_reduction"] = round(1 - row["tokens_after"] / max(row["tokens_before"], 1), 4)
        table[molecule] = row
    return table


def file_sequences(path: Path) -> dict[Molecule, list[str]]:
    """Every sequence of a (held-out) sequence file, by molecule."""
    found: dict[Molecule, list[str]] = {}
    for sequence, molecule in read_sequences(path, DataReport(str(path))):
        found.setdefault(molecule, []).append(sequence)
    return found


def stage1_tokens(file_residues: Counter, measured: dict[str, dict[str, Any]]) -> dict[str, int]:
    """The training file's sequence tokens before and after, at the residues per token measured on held-out
    pieces of it (BOS/EOS per window not counted: they do not change)."""
    return {name: round(sum(residues / measured[molecule][f"residues_per_token_{name}"]
                            for molecule, residues in file_residues.items() if molecule in measured))
            for name in ("before", "after")}


def stage2_tokens(path: Path, tokenizers: dict[str, PreTrainedTokenizerBase]) -> dict[str, Any]:
    """Tokens of the first STAGE2_ROWS instruction rows (input + output) under each tokenizer."""
    rows = list(islice(read_instructions(path, DataReport(str(path))), STAGE2_ROWS))
    texts = [text for row in rows for text in (row["input"], row["output"])]
    counts: dict[str, Any] = {"rows": len(rows)}
    for name, tokenizer in tokenizers.items():
        counts[name] = sum(map(len, encode(tokenizer, texts)))
    counts["token_reduction"] = round(1 - counts["after"] / max(counts["before"], 1), 4)
    return counts


def changed_chunks(tokenizers: dict[str, PreTrainedTokenizerBase], chunks: list[str]) -> list[str]:
    """The chunks whose ids differ between the two tokenizers."""
    before, after = (encode(tokenizer, chunks) for tokenizer in tokenizers.values())
    return [chunk for chunk, old, new in zip(chunks, before, after, strict=True) if old != new]


def text_check(tokenizers: dict[str, PreTrainedTokenizerBase], new_tokens: list[str], guard: TextGuard
               ) -> dict[str, Any]:
    """Which all-capitals words change: of the protected words (none, by construction: checked here) and of every
    4-letter word at the start of a line and after a space. Only a chunk whose text contains a new token's text
    can change (see TextGuard), so those are the ones compared."""
    texts = {tokenizers["before"].convert_tokens_to_string([token]) for token in new_tokens}
    protected = sorted(set().union(*(guard.chunks_containing(text) for text in texts)))
    words = sorted({word for text in texts for word in words_containing(text, CHECKED_WORD_LETTERS)
                    if len(word) == CHECKED_WORD_LETTERS})
    check: dict[str, Any] = {"protected_forms": guard.size, "protected_compared": len(protected),
                             "protected_changed": changed_chunks(tokenizers, protected), "words_changed": {}}
    for where, prefix in (("at the start of a line", ""), ("after a space", " ")):
        changed = changed_chunks(tokenizers, [prefix + word for word in words])
        check["words_changed"][where] = {"letters": CHECKED_WORD_LETTERS, "count": len(changed),
                                         "of": len(ascii_uppercase) ** CHECKED_WORD_LETTERS,
                                         "examples": [word.strip() for word in changed[:SHOWN_WORDS]]}
    return check


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: what `omics vocab build` prints and writes as vocab_report.md."""
    vocabulary = report["vocabulary"]
    lines = [f"# Sequence vocabulary: {report['base_model']} + {vocabulary['added']} tokens",
             "", f"vocabulary {vocabulary['before']:,} → {vocabulary['after']:,} "
             f"(+{vocabulary['dna']} DNA/RNA, +{vocabulary['protein']} protein; {vocabulary['merges']} merges "
             f"appended; new ids {vocabulary['first_new_id']}–{vocabulary['after'] - 1})", ""]
    for title, key in (("held-out pieces of --data", "heldout"), ("--eval-data", "eval_data")):
        if report.get(key):
            lines += [f"## Residues per token, {title}", "", "| molecule | sequences | residues | before | after | "
                      "tokens saved |", "|---|---|---|---|---|---|"]
            lines += [f"| {molecule} | {row['sequences']:,} | {row['residues']:,} | {row['residues_per_token_before']}"
                      f" | {row['residues_per_token_after']} | {row['token_reduction']:.1%} |"
                      for molecule, row in report[key].items()]
            lines.append("")
    stage1 = report["stage1_tokens"]
    lines.append(f"Stage 1 sequence tokens of --data (estimated): {stage1['before']:,} → {stage1['after']:,} "
                 f"({1 - stage1['after'] / max(stage1['before'], 1):.1%} fewer)")
    if report.get("stage2_tokens"):
        stage2 = report["stage2_tokens"]
        lines.append(f"Stage 2 tokens (input + output) of the first {stage2['rows']:,} rows of --stage2-data: "
                     f"{stage2['before']:,} → {stage2['after']:,} ({stage2['token_reduction']:.1%} fewer)")
    check = report["text_check"]
    lines += ["", f"Text: {len(check['protected_changed'])} of {check['protected_forms']:,} protected word forms "
              "changed (all-capitals words up to 3 letters and common acronyms, after a space, bracket, quote...)"]
    for where, words in check["words_changed"].items():
        lines.append(f"{words['count']:,} of {words['of']:,} {words['letters']}-letter all-capitals words change "
                     f"{where}" + (f", e.g. {', '.join(words['examples'][:8])}" if words["examples"] else ""))
    lines.append(f"\nbuilt in {report['seconds']:.1f} s")
    return "\n".join(lines) + "\n"
