"""Validating readers, packing, the packed collator, the block cache and Stage 1 windows."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from datasets.table import MemoryMappedTable

from omics.data.packing import IGNORE, PackedCollator, cached_blocks, pack
from omics.data.pretrain import pretrain_examples, sequence_windows
from omics.data.validate import MAX_EXAMPLES_PER_REASON, DataError, DataReport, read_instructions, read_sequences
from omics.sequences import FASTA_HEADER as FASTA
from omics.sequences import OUTSIDE_ALPHABETS as LETTERS
from omics.sequences import TEXT


def sequences(path: Path) -> tuple[list[tuple[str, str]], DataReport]:
    report = DataReport(str(path))
    return list(read_sequences(path, report)), report


def instructions(path: Path, on_bad_line: str = "skip") -> tuple[list[dict], DataReport]:
    report = DataReport(str(path))
    return list(read_instructions(path, report, on_bad_line)), report


# --------------------------------------------------------------------------------------- read_sequences


def test_read_sequences_counts_blank_and_bad_lines(write_file):
    path = write_file("seqs.txt", [
        "ACGTACGT",  # 1
        "",  # 2 blank
        "MKVLAAG*",  # 3
        "hello 123",  # 4 text
        "   \t",  # 5 blank (whitespace only)
        ">seq1 description",  # 6 FASTA header (not the first line: a one-per-line file)
        "acguacgu",  # 7 lower-case RNA
        "ACGT-ACGT",  # 8 text (gap)
        "ACGTNACGTA",  # 9
        "MKJLV",  # 10 J is in no alphabet
    ])
    got, report = sequences(path)
    assert got == [("ACGTACGT", "dna"), ("MKVLAAG*", "protein"), ("ACGUACGU", "rna"), ("ACGTNACGTA", "dna")]
    assert (report.lines, report.blank, report.valid) == (10, 2, 4)
    assert report.skipped == {TEXT: 2, FASTA: 1, LETTERS: 1}
    assert report.examples == {TEXT: [4, 8], FASTA: [6], LETTERS: [10]}
    assert report.molecules == {"dna": 2, "protein": 1, "rna": 1}
    assert report.residues == {"dna": 18, "protein": 8, "rna": 8}
    doc = report.to_dict()
    assert doc["skipped"] == 4 and doc["blank_lines"] == 2 and doc["format"] == "lines"
    assert doc["first_skipped_lines"] == {TEXT: [4, 8], FASTA: [6], LETTERS: [10]}
    json.dumps(doc)  # serialisable as written to data_report.json
    assert "4 valid of 10 lines" in report.summary() and "[4, 8]" in report.summary()


def test_read_sequences_keeps_only_the_first_bad_line_numbers(write_file):
    lines = ["ACGT"] + ["not a sequence"] * (MAX_EXAMPLES_PER_REASON + 5)
    got, report = sequences(write_file("many_bad.txt", lines))
    assert len(got) == 1
    assert report.skipped[TEXT] == MAX_EXAMPLES_PER_REASON + 5
    assert report.examples[TEXT] == list(range(2, 2 + MAX_EXAMPLES_PER_REASON))


def test_read_sequences_crlf_and_no_final_newline(write_file):
    got, report = sequences(write_file("crlf.txt", b"ACGT\r\nMKV\r\nACGU"))
    assert got == [("ACGT", "dna"), ("MKV", "protein"), ("ACGU", "rna")]
    assert report.lines == 3


def test_read_sequences_non_utf8_line_names_file_and_line(write_file):
    path = write_file("binary.txt", b"ACGT\nACGU\n\xff\xfe\x00ACGT\nACGT\n")
    report = DataReport(str(path))
    with pytest.raises(DataError, match=r"binary\.txt:3: not UTF-8"):
        list(read_sequences(path, report))


def test_read_sequences_gzip_file_is_named(write_file):
    import gzip

    path = write_file("seqs.txt.gz", gzip.compress(b"ACGT\n" * 100))
    with pytest.raises(DataError, match=r"seqs\.txt\.gz:1: not UTF-8.*compressed"):
        sequences(path)


def test_read_sequences_missing_file(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(DataError, match=r"nope\.txt not found"):
        sequences(path)


def test_read_sequences_empty_file(write_file):
    path = write_file("empty.txt", "")
    with pytest.raises(DataError, match=r"empty\.txt: no valid sequence in 0 lines"):
        sequences(path)


def test_read_sequences_blank_only_file(write_file):
    path = write_file("blank.txt", "\n\n   \n")
    with pytest.raises(DataError, match=r"blank\.txt: no valid sequence in 3 lines"):
        sequences(path)


def test_read_sequences_all_invalid_file(write_file):
    path = write_file("junk.txt", ["1234", ">header", "hello world"])
    with pytest.raises(DataError, match=r"junk\.txt: no valid sequence in 3 lines") as err:
        sequences(path)
    assert "FASTA header" in str(err.value) and "[1, 3]" in str(err.value)  # the summary says why


def test_read_sequences_utf8_bom(write_file):
    got, report = sequences(write_file("bom.txt", "\ufeffACGT\nACGU\n".encode()))
    assert got == [("ACGT", "dna"), ("ACGU", "rna")]


# ------------------------------------------------------------------------------------ read_instructions

GOOD = {"input": "What is <dna>ACGT<dna>?", "output": "positive", "label": 1, "task": "emp"}


def record(**changes) -> str:
    doc = {**GOOD, **changes}
    return json.dumps({k: v for k, v in doc.items() if v is not ...})


BAD_LINES = [
    ("{not json", "invalid JSON"),
    ("[1, 2, 3]", "line is not a JSON object"),
    ('"just a string"', "line is not a JSON object"),
    (record(label=...), "missing field(s) label"),
    (json.dumps({"input": "x"}), "missing field(s) output, label, task"),
    (record(input=""), "field 'input' must be a non-empty string"),
    (record(output="   "), "field 'output' must be a non-empty string"),
    (record(task=3), "field 'task' must be a non-empty string"),
    (record(label=None), "label is null"),
    (record(label=""), "label is an empty string"),
    (record(label={"a": "x", "b": "y"}), "label object must map names to finite numbers"),
    (record(label={"a": {"b": 1}}), "label object must map names to finite numbers"),
    (record(label={"a": True}), "label object must map names to finite numbers"),
    (record(label={}), "label object must map names to finite numbers"),
    (record(label=[1, [2]]), "label list must hold strings or finite numbers"),
    ('{"input": "x", "output": "y", "task": "t", "label": NaN}', "label is not a finite number"),
    ('{"input": "x", "output": "y", "task": "t", "label": Infinity}', "label is not a finite number"),
]
BAD_IDS = [f"{i}-{problem.split(' (')[0].replace(' ', '_')}" for i, (_, problem) in enumerate(BAD_LINES)]


@pytest.mark.parametrize("line, problem", BAD_LINES, ids=BAD_IDS)
def test_read_instructions_bad_line_skip(write_file, line, problem):
    path = write_file("data.jsonl", [record(), line, record(task="other")])
    got, report = instructions(path)
    assert [r["line"] for r in got] == [1, 3]
    assert report.valid == 2 and sum(report.skipped.values()) == 1
    (reason,) = report.skipped
    assert reason.startswith(problem)
    assert report.examples[reason] == [2]
    assert report.tasks == {"emp": 1, "other": 1}


@pytest.mark.parametrize("line, problem", BAD_LINES, ids=BAD_IDS)
def test_read_instructions_bad_line_stop(write_file, line, problem):
    path = write_file("data.jsonl", [record(), "", line, record()])
    with pytest.raises(DataError, match=r"data\.jsonl:3: ") as err:
        instructions(path, on_bad_line="stop")
    assert problem in str(err.value)
    assert "on_bad_line=skip" in str(err.value)  # says how to go on


@pytest.mark.parametrize("label", [3, -0.5, True, "positive", ["a", "b"], [1.5, 2], {"x": 1.0, "y": 2}])
def test_read_instructions_valid_labels_keep_fields(write_file, label):
    extra = {**GOOD, "label": label, "comment": "dropped"}
    path = write_file("ok.jsonl", ["", json.dumps(extra)])
    (got,), report = instructions(path)
    assert got == {"input": GOOD["input"], "output": GOOD["output"], "label": label, "task": "emp", "line": 2}
    assert report.valid == 1 and not report.skipped and report.blank == 1


def test_read_instructions_reports_many_reasons(write_file):
    path = write_file("mixed.jsonl", [record(), "{", record(label=None), "{", record(), "[]"])
    got, report = instructions(path)
    assert [r["line"] for r in got] == [1, 5]
    assert report.examples == {
        "invalid JSON (Expecting property name enclosed in double quotes)": [2, 4],
        "label is null": [3],
        "line is not a JSON object": [6],
    }


def test_read_instructions_empty_input(write_file):
    with pytest.raises(DataError, match=r"empty\.jsonl: no valid example in 0 lines"):
        instructions(write_file("empty.jsonl", ""))


def test_read_instructions_all_bad(write_file):
    with pytest.raises(DataError, match=r"bad\.jsonl: no valid example in 2 lines"):
        instructions(write_file("bad.jsonl", ["{", record(label=None)]))


def test_read_instructions_missing_file(tmp_path):
    with pytest.raises(DataError, match="missing.jsonl not found"):
        instructions(tmp_path / "missing.jsonl")


def test_read_instructions_non_utf8(write_file):
    latin1 = json.dumps({**GOOD, "output": "caf\xe9"}, ensure_ascii=False).encode("latin-1")
    path = write_file("latin1.jsonl", record().encode() + b"\n" + latin1 + b"\n")
    with pytest.raises(DataError, match=r"latin1\.jsonl:2: not UTF-8"):
        instructions(path)


@pytest.mark.parametrize("label", ['[NaN]', '{"a": NaN}', '{"a": Infinity}'])
def test_read_instructions_nan_inside_containers(write_file, label):
    line = '{"input": "x", "output": "y", "task": "t", "label": ' + label + "}"
    path = write_file("nan.jsonl", [record(), line])
    got, report = instructions(path)
    assert len(got) == 1 and sum(report.skipped.values()) == 1


# ---------------------------------------------------------------------------------------------- pack


def make_examples(lengths: list[int]) -> list[tuple[list[int], list[int]]]:
    """Example i holds tokens i*1000 + position, so every token says where it came from."""
    return [([i * 1000 + p for p in range(n)], [i * 1000 + p for p in range(n)]) for i, n in enumerate(lengths)]


def split_block(block: dict) -> list[tuple[list[int], list[int]]]:
    out, start = [], 0
    for n in block["lengths"]:
        out.append((block["input_ids"][start : start + n], block["labels"][start : start + n]))
        start += n
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("buffer", [3, 7, 8192])
def test_pack_invariants(seed, buffer):
    rng = random.Random(seed)
    block_len = 32
    lengths = [rng.randint(1, block_len) for _ in range(60)]
    examples = make_examples(lengths)
    blocks = list(pack(iter(examples), block_len, buffer=buffer))
    seen = []
    for block in blocks:
        assert len(block["input_ids"]) == len(block["labels"]) == sum(block["lengths"]) <= block_len
        assert all(n > 0 for n in block["lengths"])
        for ids, labels in split_block(block):
            index = ids[0] // 1000
            assert ids == examples[index][0]  # whole, in order within itself
            assert labels[0] == IGNORE  # no target across the boundary from the previous example
            assert labels[1:] == ids[1:]
            seen.append(index)
    assert sorted(seen) == list(range(len(examples)))  # every example in exactly one block


def test_pack_best_fit_decreasing_fills_blocks():
    blocks = list(pack(make_examples([7, 3, 6, 4, 5, 5]), block_len=10))
    assert len(blocks) == 3
    assert all(len(b["input_ids"]) == 10 for b in blocks)
    assert sorted(sorted(b["lengths"]) for b in blocks) == [[3, 7], [4, 6], [5, 5]]


def test_pack_example_of_exactly_block_len():
    (block,) = pack(make_examples([16]), block_len=16)
    assert block["lengths"] == [16]


def test_pack_rejects_example_longer_than_block():
    with pytest.raises(ValueError, match="17 tokens exceeds block length 16"):
        list(pack(make_examples([3, 17]), block_len=16))


def test_pack_buffer_is_bounded():
    consumed = 0
    examples = make_examples([5] * 50)

    def stream():
        nonlocal consumed
        for example in examples:
            consumed += 1
            yield example

    blocks = pack(stream(), block_len=20, buffer=8)
    first = next(blocks)
    assert consumed == 8  # the first blocks come out after one buffer, not after the whole stream
    firsts = [first] + [next(blocks)]
    assert {ids[0] // 1000 for b in firsts for ids, _ in split_block(b)} <= set(range(8))
    rest = list(blocks)
    assert consumed == 50 and len(firsts) + len(rest) == 13  # 6 x 2 full blocks of 4 + 1 of 2


def test_pack_empty_stream():
    assert list(pack(iter([]), block_len=8)) == []


# ------------------------------------------------------------------------------------- PackedCollator


def test_collator_positions_restart_and_padding_is_ignored():
    rows = [
        {"input_ids": [11, 12, 13, 21, 22], "labels": [IGNORE, 12, 13, IGNORE, 22], "lengths": [3, 2]},
        {"input_ids": [31, 32, 33], "labels": [IGNORE, 32, 33], "lengths": [3]},
        {"input_ids": [41], "labels": [IGNORE], "lengths": [1]},
    ]
    batch = PackedCollator(pad_token_id=7)(rows)
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert all(t.dtype == torch.long and t.shape == (3, 5) for t in batch.values())
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 0, 1], [0, 0, 1, 2, 3]]
    assert batch["input_ids"].tolist() == [[11, 12, 13, 21, 22], [31, 32, 33, 7, 7], [41, 7, 7, 7, 7]]
    assert batch["labels"].tolist() == [
        [IGNORE, 12, 13, IGNORE, 22],
        [IGNORE, 32, 33, IGNORE, IGNORE],
        [IGNORE, IGNORE, IGNORE, IGNORE, IGNORE],
    ]


def test_collator_on_packed_blocks():
    blocks = list(pack(make_examples([5, 9, 2, 7, 3]), block_len=12))
    batch = PackedCollator(pad_token_id=0)(blocks)
    for row, block in enumerate(blocks):
        expected = [p for n in block["lengths"] for p in range(n)]
        pad = batch["input_ids"].shape[1] - len(expected)
        assert batch["position_ids"][row].tolist() == expected + list(range(pad))
        assert batch["labels"][row, len(expected):].eq(IGNORE).all()
        starts = [sum(block["lengths"][:i]) for i in range(len(block["lengths"]))]
        assert batch["labels"][row, starts].eq(IGNORE).all()


# -------------------------------------------------------------------------------------- cached_blocks


def test_cached_blocks_builds_once_and_memory_maps(tmp_path):
    calls = {"build": 0, "finish": 0}
    blocks = list(pack(make_examples([5, 9, 2, 7, 3, 12]), block_len=12))

    def build():
        calls["build"] += 1
        yield from blocks

    def finish():
        calls["finish"] += 1
        return {"report": {"valid": 6}}

    first, meta = cached_blocks(tmp_path / "cache", build, finish)
    second, meta2 = cached_blocks(tmp_path / "cache", build, finish)
    assert calls == {"build": 1, "finish": 1}
    assert meta == meta2 == {"report": {"valid": 6}}
    assert isinstance(second, Dataset) and isinstance(second.data, MemoryMappedTable)
    assert second.cache_files[0]["filename"] == str(tmp_path / "cache" / "blocks.arrow")
    assert first.to_list() == second.to_list() == blocks
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["blocks.arrow", "meta.json"]


def test_cached_blocks_many_batches(tmp_path):
    blocks = [{"input_ids": [i, i], "labels": [IGNORE, i], "lengths": [2]} for i in range(2500)]
    ds, _ = cached_blocks(tmp_path / "c", lambda: iter(blocks), dict)
    assert len(ds) == 2500 and ds[2049] == blocks[2049]


def test_cached_blocks_failed_build_leaves_no_cache(tmp_path):
    def build():
        yield {"input_ids": [1], "labels": [IGNORE], "lengths": [1]}
        raise DataError("bad data")

    with pytest.raises(DataError):
        cached_blocks(tmp_path / "c", build, dict)
    assert not (tmp_path / "c" / "blocks.arrow").exists() and not (tmp_path / "c" / "meta.json").exists()
    ds, _ = cached_blocks(tmp_path / "c", lambda: iter([{"input_ids": [2], "labels": [IGNORE], "lengths": [1]}]),
                          dict)
    assert ds["input_ids"] == [[2]]  # rebuilt, not a half-written cache


def test_cached_blocks_failed_build_cleans_partial_file(tmp_path):
    def build():
        yield {"input_ids": [1], "labels": [IGNORE], "lengths": [1]}
        raise DataError("bad data")

    with pytest.raises(DataError):
        cached_blocks(tmp_path / "c", build, dict)
    assert list((tmp_path / "c").glob("*.tmp")) == []


# ------------------------------------------------------------------------------------ sequence_windows


def windows(write_file, tokenizer, sequence: str, max_length: int, wrap_tags: bool = False):
    path = write_file("seq.txt", [sequence])
    report = DataReport(str(path))
    return list(sequence_windows(path, tokenizer, max_length, wrap_tags, report)), report


@pytest.mark.parametrize("max_length", [8, 16, 51])
def test_sequence_windows_cut_long_sequence(write_file, tokenizer, max_length):
    sequence = "ACGT" * 25  # 50 tokens with the Llama-3 tokenizer
    got, report = windows(write_file, tokenizer, sequence, max_length)
    ids = tokenizer(sequence, add_special_tokens=False)["input_ids"]
    assert len(got) > 1
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    for i, (window, molecule, _) in enumerate(got):
        assert molecule == "dna"
        assert len(window) <= max_length
        assert window[0] == bos and window.count(bos) == 1
        assert (window[-1] == eos) == (i == len(got) - 1)
    body = [t for w, _, _ in got for t in w if t not in (bos, eos)]
    assert body == ids  # nothing lost, nothing repeated
    assert sum(r for _, _, r in got) == len(sequence)
    assert report.notes["sequences cut into several windows"] == 1


def test_sequence_windows_exact_fit_is_one_window(write_file, tokenizer):
    sequence = "ACGT" * 25
    n = len(tokenizer(sequence, add_special_tokens=False)["input_ids"])
    got, report = windows(write_file, tokenizer, sequence, n + 2)
    assert len(got) == 1 and len(got[0][0]) == n + 2 and got[0][2] == 100
    assert not report.notes


def test_sequence_windows_short_and_wrapped(write_file, tokenizer):
    got, _ = windows(write_file, tokenizer, "acgu", 64, wrap_tags=True)
    ((window, molecule, residues),) = got
    assert (molecule, residues) == ("rna", 4)
    assert window[0] == tokenizer.bos_token_id and window[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(window[1:-1]) == "<rna>ACGU<rna>"


def test_pretrain_examples_train_on_every_token(write_file, tokenizer):
    path = write_file("seqs.txt", ["ACGT" * 10, "MKVLAAGITWW", "bad line!"])
    report = DataReport(str(path))
    examples = list(pretrain_examples(path, tokenizer, 12, False, report))
    assert all(ids == labels for ids, labels in examples)
    assert report.valid == 2 and report.skipped[TEXT] == 1


def test_sequence_windows_residues_sum_when_rounding(write_file, tokenizer):
    sequence = "ACGTTGCA" * 12  # 96 residues, 60 tokens: 10 windows of 6 tokens, 9.6 residues each
    got, _ = windows(write_file, tokenizer, sequence, 8)
    assert sum(r for _, _, r in got) == len(sequence)
