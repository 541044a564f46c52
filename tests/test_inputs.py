"""Inputs that used to be misread: FASTA, UTF-16/32 and byte-order marks, CRLF, text lines, label types that
contradict their task, tiny and unseen tasks, over-long examples, and caches that must notice new weights."""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import shutil
from pathlib import Path

import pytest
from helpers import cli

from omics.config import TrainConfig
from omics.data.instructions import chat_examples
from omics.data.labels import MIN_TASK_EXAMPLES
from omics.data.packing import model_fingerprint, tokenizer_fingerprint
from omics.data.pretrain import sequence_windows
from omics.data.validate import DataError, DataReport, read_instructions, read_sequences
from omics.sequences import TEXT

PROTEIN = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWUAXBZ"  # noqa: E501
DNA = "ACGTTGCAAGGCTTAACGGATCCATGCAAGTCGAACGGTAACAGGAAGAAGCTTGCTTCTTTGCTGACGAGTGGCGGACGGGTGAGTAATGTCTGGGAAACTGCC"


def sequences(path: Path) -> tuple[list[tuple[str, str]], DataReport]:
    report = DataReport(str(path))
    return list(read_sequences(path, report)), report


def wrapped(sequence: str, width: int = 60) -> list[str]:
    return [sequence[i : i + width] for i in range(0, len(sequence), width)]


# ------------------------------------------------------------------------------------------------- FASTA


def test_fasta_wrapped_records_are_one_sequence_each(write_file):
    path = write_file("seqs.fasta", [
        "", ">sp|P1|protein one", *wrapped(PROTEIN), ">dna two",  # lines 2-7: a protein over 4 lines
        *wrapped(DNA.lower()), "",  # 8-10: lower-case DNA over 2 lines, then a blank line
        ">empty record", ">text inside", "ACGTACGT", "This is a header line", "ACGT",  # 11-15: refused whole
        ">rna", "ACGUACGU", "ACGUAC"])
    got, report = sequences(path)
    assert got == [(PROTEIN, "protein"), (DNA, "dna"), ("ACGUACGUACGUAC", "rna")]
    assert (report.format, report.records, report.valid) == ("fasta", 5, 3)
    assert report.examples == {"FASTA record without a sequence": [11], TEXT: [14]}  # the bad line itself
    doc = report.to_dict()
    assert doc["records"] == 5 and doc["format"] == "fasta"
    assert "3 valid of 5 FASTA records" in report.summary()


def test_fasta_windows_cut_the_joined_record_not_each_line(write_file, tokenizer):
    path = write_file("one.fa", [">x", *wrapped(DNA, 10)])
    report = DataReport(str(path))
    windows = list(sequence_windows(path, tokenizer, 4096, False, report))
    ids = tokenizer(DNA, add_special_tokens=False)["input_ids"]
    assert windows == [([tokenizer.bos_token_id, *ids, tokenizer.eos_token_id], "dna", len(DNA))]


def test_plain_file_stays_one_sequence_per_line(write_file):
    got, report = sequences(write_file("plain.txt", ["ACGT", "MKVLA", ">late header is not FASTA", "ACGU"]))
    assert [s for s, _ in got] == ["ACGT", "MKVLA", "ACGU"] and report.format == "lines"
    assert "records" not in report.to_dict()


def test_fasta_without_any_valid_record_is_refused(write_file):
    with pytest.raises(DataError, match="no valid FASTA record"):
        sequences(write_file("bad.fa", [">a", ">b", "hello world"]))


# ------------------------------------------------------------------------------- encodings, line endings


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"])
def test_sequences_with_a_byte_order_mark(write_file, encoding):
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(encoding, b"")
    data = bom + ">r1\r\nACGT\r\nACGT\r\n>r2\r\nMKVLA\r\n".encode(encoding)
    got, report = sequences(write_file("seqs.fa", data))
    assert got == [("ACGTACGT", "dna"), ("MKVLA", "protein")]
    assert report.encoding == {"utf-8-sig": "utf-8", "utf-32": "utf-32"}.get(encoding, "utf-16")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
def test_jsonl_utf16_and_utf8_bom_with_crlf(write_file, encoding):
    lines = [{"input": "Is <dna>ACGT<dna> rich?", "output": "Caf\u00e9: yes", "label": "yes", "task": "t"}] * 2
    data = "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in lines).encode(encoding)
    report = DataReport("x")
    got = list(read_instructions(write_file("data.jsonl", data), report))
    assert [r["output"] for r in got] == ["Caf\u00e9: yes"] * 2 and report.valid == 2 and not report.skipped


def test_utf16_without_byte_order_mark_is_named(write_file):
    path = write_file("seqs.txt", "ACGT\nACGU\n".encode("utf-16-le"))
    with pytest.raises(DataError, match=r"seqs\.txt:1: NUL bytes: UTF-16/UTF-32 text without a byte-order mark"):
        sequences(path)


def test_broken_utf16_is_named(write_file):
    path = write_file("seqs.txt", codecs.BOM_UTF16_LE + "ACGT\n".encode("utf-16-le") + b"\x00\xdc\n\x00")
    with pytest.raises(DataError, match=r"seqs\.txt: not valid UTF-16 text"):
        sequences(path)


# ------------------------------------------------------------------------------------------ label types

CLASSES = ["alpha", "beta", "gamma"]


def jsonl(write_file, name: str, labels: list[tuple[str, object]]) -> Path:
    return write_file(name, [json.dumps({"input": f"Question {i} <dna>ACGT<dna>?", "output": str(label),
                                         "label": label, "task": task}) for i, (task, label) in enumerate(labels)])


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_model):
    from omics.model import load_tokenizer

    return load_tokenizer(tiny_model, chat=True)


def build(path: Path, tokenizer, **config) -> tuple[int, DataReport, dict]:
    report, meta = DataReport(str(path)), {}
    examples = list(chat_examples(path, tokenizer, TrainConfig(max_length=256, **config), report, meta))
    return len(examples), report, meta


@pytest.mark.parametrize("odd, reason", [
    ("high", "task reg: text label among numeric labels"),
    (True, "task reg: true/false label among numeric labels"),
    ({"a": 1.0}, "task reg: object label among numeric labels"),
])
def test_label_contradicting_a_numeric_task_is_reported_by_line(write_file, chat_tokenizer, odd, reason):
    labels = [("reg", 0.5), ("reg", "2.5"), ("reg", 7), ("reg", odd), ("reg", -1.0), ("cls", "alpha")]
    n, report, meta = build(jsonl(write_file, "t.jsonl", labels), chat_tokenizer)
    assert n == 5 and report.examples == {reason: [4]} and report.tasks == {"reg": 4, "cls": 1}
    assert meta["task_summary"]["reg"]["n"] == 4 and meta["task_summary"]["reg"]["kinds"] == {"number": 4}


def test_number_in_a_class_task_is_reported_and_stop_names_the_line(write_file, chat_tokenizer):
    labels = [("cls", c) for c in CLASSES * 2] + [("cls", 3)]
    path = jsonl(write_file, "t.jsonl", labels)
    n, report, _ = build(path, chat_tokenizer)
    assert n == 6 and report.examples == {"task cls: numeric label among text labels": [7]}
    with pytest.raises(DataError, match=r"t\.jsonl:7: label 3: task cls: numeric label among text labels"):
        build(path, chat_tokenizer, on_bad_line="stop")


@pytest.mark.parametrize("text", ["NaN", "nan", "inf", "-Infinity"])
def test_nan_written_as_text_is_a_bad_label(write_file, text):
    path = jsonl(write_file, "t.jsonl", [("reg", 1.5), ("reg", text)])
    report = DataReport(str(path))
    assert len(list(read_instructions(path, report))) == 1
    assert report.examples == {"label is not a finite number (NaN or infinity written as text)": [2]}


def test_binary_labels_of_several_spellings_are_no_conflict(write_file, chat_tokenizer):
    labels = [("bin", x) for x in (0, 1, "yes", "no", True, False, "1")]
    n, report, meta = build(jsonl(write_file, "t.jsonl", labels), chat_tokenizer)
    assert n == 7 and not report.skipped


def test_task_whose_labels_fit_no_type_is_warned(write_file, chat_tokenizer):
    labels = [("Stability-x", w) for w in ("high", "low", "high")]  # a regression family with words only
    _, report, _ = build(jsonl(write_file, "t.jsonl", labels), chat_tokenizer)
    assert any("Stability-x" in w and "evaluator will refuse" in w for w in report.warnings)


# ------------------------------------------------------------------------------------ few-example tasks


def test_tasks_with_few_examples_are_warned(write_file, chat_tokenizer):
    labels = [("big", CLASSES[i % 3]) for i in range(MIN_TASK_EXAMPLES)] + [("small", "alpha"), ("small", "beta")]
    _, report, _ = build(jsonl(write_file, "t.jsonl", labels), chat_tokenizer)
    assert len(report.warnings) == 1 and report.warnings[0].startswith("task small: only 2 training examples")
    assert report.to_dict()["warnings"] == report.warnings and "warning: task small" in report.summary()


# ---------------------------------------------------------------------------------------------- caches


def test_model_fingerprint_follows_weights_and_tokenizer(tiny_model, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    copy = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    (copy / "checkpoints").mkdir()
    before, tokenizer_before = model_fingerprint(copy), tokenizer_fingerprint(copy)
    (copy / "checkpoints" / "noise.bin").write_bytes(b"x")  # sub-folders are not the model
    assert model_fingerprint(copy) == before
    weights = load_file(copy / "model.safetensors")
    weights["lm_head.weight"] = weights["lm_head.weight"] + torch.ones(1)  # same size, new content, new mtime
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert model_fingerprint(copy) != before and tokenizer_fingerprint(copy) == tokenizer_before
    config = json.loads((copy / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 77}))
    assert tokenizer_fingerprint(copy) != tokenizer_before


def test_tokenised_data_cache_follows_data_and_tokenizer(tiny_model, tmp_path):
    from omics.model import load_tokenizer
    from omics.stage1.train import STAGE
    from omics.train import build_dataset

    model = tmp_path / "tokenizer"
    model.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tiny_model / name, model / name)
    data, config, tokenizer = tmp_path / "seqs.txt", TrainConfig(max_length=64), load_tokenizer(model, chat=False)

    def cache_dirs() -> set[str]:
        build_dataset(STAGE, data, tokenizer, config, {}, tmp_path / "cache")
        return {p.name for p in (tmp_path / "cache").iterdir()}

    data.write_text("ACGTACGT\n")
    first = cache_dirs()
    assert cache_dirs() == first  # same data and tokenizer: the cache is reused
    data.write_text("ACGTACGA\n")
    assert len(cache_dirs()) == 2
    config_file = model / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "model_max_length": 77}))
    tokenizer = load_tokenizer(model, chat=False)
    assert len(cache_dirs()) == 3


# --------------------------------------------------------------------------- end to end, on the tiny model


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_stage1_evaluate_base_cache_notices_new_weights(tiny_model, tmp_path, monkeypatch, write_file):
    """FASTA read by the likelihood evaluation; the base model's cached likelihood is recomputed when its
    weight file is rewritten (before: the key was config.json alone, so new weights reused the old numbers)."""
    from safetensors.torch import load_file, save_file

    base = Path(shutil.copytree(tiny_model, tmp_path / "base"))
    write_file("held.fa", [">a", *wrapped(DNA, 30), ">b", *wrapped(PROTEIN[:90], 30)])
    args = ["stage1", "evaluate", "--data", "held.fa", "--model", str(tiny_model), "--base-model", str(base),
            "--metrics-dir", "m"]
    assert cli(monkeypatch, tmp_path, *args) == 0
    first = read_json(tmp_path / "m" / "likelihood.json")["results"]
    assert set(first["base"]) == {"dna", "protein", "overall"}
    assert first["base"] == first["trained"]  # same weights so far
    weights = load_file(base / "model.safetensors")
    weights["lm_head.weight"] = weights["lm_head.weight"] * 2
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    assert cli(monkeypatch, tmp_path, *args, "--overwrite") == 0
    second = read_json(tmp_path / "m" / "likelihood.json")["results"]
    assert second["trained"] == first["trained"] and second["base"] != first["base"]


@contextlib.contextmanager
def omics_log():
    """The omics logger's records (module-scoped fixtures cannot use caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("omics").addHandler(handler)
    try:
        yield records
    finally:
        logging.getLogger("omics").removeHandler(handler)


@pytest.fixture(scope="module")
def stage2_run(tiny_model, tmp_path_factory):
    """A 1-step Stage 2 run on a file with a tiny task, a label conflict and an over-long example; then an
    evaluation on a file with a task the training never saw."""
    root = tmp_path_factory.mktemp("inputs-stage2")
    train = [{"input": f"Is <dna>{DNA[: 20 + i]}<dna> rich?", "output": f"It is {c}.", "label": c, "task": "big"}
             for i, c in enumerate(CLASSES * 8)]
    train += [{"input": f"<dna>{DNA * 40}<dna> Rich?", "output": "It is alpha.", "label": "alpha", "task": "big"},
              {"input": "Value of <dna>ACGT<dna>?", "output": "3", "label": 3, "task": "big"},  # line 26
              {"input": "Value of <dna>ACGA<dna>?", "output": "5", "label": 5.0, "task": "small"}]
    test = [{**train[0], "task": "big"}, {"input": "New <dna>ACGT<dna>?", "output": "yes", "label": "yes",
                                          "task": "unseen"}]
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (root / name).write_text("".join(json.dumps(r) + "\r\n" for r in rows), encoding="utf-8-sig")
    fast = [f"--set={item}" for item in ("max_length=256", "micro_batch_size=4", "grad_accum=1", "max_steps=1",
                                         "save_steps=1", "lora_r=4", "gradient_checkpointing=false")]
    logs = {}
    with pytest.MonkeyPatch.context() as mp, omics_log() as records:
        codes = [cli(mp, root, "stage2", "train", "--data", "train.jsonl", "--base-model", str(tiny_model),
                     "--output-dir", "model", "--metrics-dir", "metrics", *fast)]
        logs["train"] = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
        records.clear()
        codes.append(cli(mp, root, "stage2", "evaluate", "--data", "test.jsonl", "--model", "model",
                         "--metrics-dir", "metrics", "--max-new-tokens", "4"))
        logs["evaluate"] = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert codes == [0, 0]
    return root, logs


def test_stage2_train_reports_conflicts_small_tasks_and_shortening(stage2_run):
    root, logs = stage2_run
    report = read_json(root / "metrics" / "data_report.json")["report"]
    assert report["first_skipped_lines"] == {"task big: numeric label among text labels": [26]}
    assert report["shortened"] == {"big": {"sequence": 1}} and report["valid"] == 26
    assert [w.split(":")[0] for w in report["warnings"]] == ["task small"]
    assert any("task small: only 1 training examples" in line for line in logs["train"])


def test_stage2_evaluate_flags_unseen_and_small_tasks(stage2_run):
    root, logs = stage2_run
    meta = read_json(root / "metrics" / "metrics.json")["meta"]
    (warning,) = meta["task_warnings"]
    assert warning.startswith("task unseen: not in the training data") and "test labels only" in warning
    assert any(line.startswith("task unseen: not in the training data") for line in logs["evaluate"])


def test_evaluate_train_data_summary_leaves_out_conflicting_labels(write_file):
    from omics.data.labels import training_label_summary
    from omics.evaluate.tasks import build_task_specs

    path = jsonl(write_file, "t.jsonl", [("reg", 0.5), ("reg", 7), ("reg", "high")])
    summary = training_label_summary(path)
    assert summary["reg"]["n"] == 2 and build_task_specs(summary)["reg"].type == "regression"


# ------------------------------------------------------------------------------------------------- missing files


@pytest.mark.parametrize("argv, message", [
    (["stage1", "train", "--data", "nope.txt"], "--data nope.txt: no such file; check the path"),
    (["stage3", "train", "--data", "r.jsonl", "--replay-data", "nope.jsonl"], "--replay-data nope.jsonl: no such"),
    (["stage2", "train", "--data", "r.jsonl", "--config", "nope.yaml"], "--config nope.yaml: no such file"),
    (["stage2", "evaluate", "--data", "nope.jsonl"], "--data nope.jsonl: no such file"),
    (["score", "--predictions", "r.jsonl", "--train-data", "nope.jsonl"], "--train-data nope.jsonl: no such file"),
    (["generate", "--model", "m", "--data", "nope.jsonl", "--out", "o.jsonl"], "--data nope.jsonl: no such file"),
    (["score", "--predictions", "folder"], "--predictions folder is a folder, not a file; pass a file"),
])
def test_a_missing_input_file_gets_one_message_naming_its_option(tmp_path, monkeypatch, caplog, argv, message):
    """Checked before any model loads or folder is created, in every command."""
    (tmp_path / "r.jsonl").write_text('{"input": "q", "output": "a", "label": "a", "task": "t"}\n')
    (tmp_path / "folder").mkdir()
    assert cli(monkeypatch, tmp_path, *argv) == 2
    assert message in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "r.jsonl"]
