"""`omics vocab build` on the tiny model and the real Llama-3 tokenizer: text keeps its ids, sequences shrink and
round-trip, special tokens stay, new rows are means, Stage 1 trains them, bits per residue stay per residue."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import SAMPLES, cli
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from omics.config import TrainConfig
from omics.data.pretrain import sequence_windows
from omics.data.validate import DataReport
from omics.errors import UserError
from omics.model import load_model, load_tokenizer, new_vocabulary_rows, prepare_for_training
from omics.model_card import read_card
from omics.vocab.learn import PROTECTED_WORDS, TextGuard, words_containing

PROSE = """\
The TATA box and GATA motifs sit upstream of the CAGE-defined start sites; DNA, RNA and ATP levels were measured.
We amplified BRCA1 and TP53 exons by PCR (qPCR for mRNA), then edited them with CRISPR/Cas9 in HEK293 cells.
GC content was 41%. AT-rich regions, CpG islands and the 5' UTR of MYC were sequenced (RNA-seq, ChIP-seq, ATAC).
ELISA, FACS and SDS-PAGE confirmed the protein; NADH, NADPH and GTP were assayed. See the FASTA and VCF files.
In 2024, the NIH and WHO said: "COVID and HIV research needs open data." Don't panic -- it's fine, isn't it?
Proteins fold; enzymes like EGFR, KRAS and BRAF signal through MAPK/ERK and PI3K/AKT/mTOR. Hello, world!
Mitochondria are the powerhouse of the cell.   Tabs\tand\nnew lines, numbers 3.14159 and 1,000,000, emoji 🧬.
"""
MESSAGES = [{"role": "system", "content": "You are a helpful biology assistant."},
            {"role": "user", "content": "What does the TATA box do in DNA transcription? Answer briefly."},
            {"role": "assistant", "content": "It recruits TBP, part of TFIID, to position RNA polymerase II."}]


@pytest.fixture(scope="module")
def built(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One vocabulary of 300 DNA/RNA and 100 protein tokens learned on the bundled Stage 1 sample."""
    root = tmp_path_factory.mktemp("vocab")
    with pytest.MonkeyPatch.context() as mp:
        rc = cli(mp, root, "vocab", "build", "--data", str(SAMPLES / "stage1_train.txt"), "--out", "base-vocab",
                 "--base-model", str(tiny_model), "--dna", "300", "--protein", "100",
                 "--eval-data", str(SAMPLES / "stage1_heldout.txt"))
    assert rc == 0
    out = root / "base-vocab"
    return SimpleNamespace(root=root, out=out, report=json.loads((out / "vocab_report.json").read_text()),
                           before=load_tokenizer(tiny_model, chat=False), after=load_tokenizer(out, chat=False))


def heldout_sequences() -> list[str]:
    return (SAMPLES / "stage1_heldout.txt").read_text().split()


def test_prose_and_chat_format_keep_their_ids(built):
    texts = [PROSE, *PROSE.splitlines(), *PROSE.split(), *(f" {word}" for word in PROSE.split())]
    assert built.after(texts)["input_ids"] == built.before(texts)["input_ids"]
    chat = [load_tokenizer(folder, chat=True) for folder in (built.before.name_or_path, built.out)]
    assert chat[1].apply_chat_template(MESSAGES) == chat[0].apply_chat_template(MESSAGES)
    assert chat[1].apply_chat_template(MESSAGES[:2], add_generation_prompt=True) == chat[0].apply_chat_template(
        MESSAGES[:2], add_generation_prompt=True)


def test_no_protected_word_changes_and_the_report_lists_those_that_do(built):
    check = built.report["text_check"]
    assert check["protected_changed"] == []
    forms = [form for word in PROTECTED_WORDS for form in (word, f" {word}", f"({word}", f"\n{word}")]
    assert built.after(forms)["input_ids"] == built.before(forms)["input_ids"]
    after_space, line_start = check["words_changed"]["after a space"], check["words_changed"]["at the start of a line"]
    assert after_space["count"] == 0
    for word in line_start["examples"]:  # each listed word does change, and only at the start of a line
        assert built.after(word)["input_ids"] != built.before(word)["input_ids"]
        assert built.after(f" {word}")["input_ids"] == built.before(f" {word}")["input_ids"]


def test_sequences_round_trip_in_fewer_tokens(built):
    tagged = [f"<dna>{sequence}<dna>" for sequence in heldout_sequences()[:5]]
    for text in [*heldout_sequences(), *tagged, "ACGTNNNNacgt", "MKV*"]:
        ids = built.after(text, add_special_tokens=False)["input_ids"]
        assert built.after.decode(ids) == text
    for molecule, row in built.report["eval_data"].items():  # measured on the held-out file
        assert row["tokens_after"] < row["tokens_before"], molecule
        assert row["residues_per_token_after"] == round(row["residues"] / row["tokens_after"], 3)
    sequences = heldout_sequences()
    assert sum(row["residues"] for row in built.report["eval_data"].values()) == sum(map(len, sequences))
    assert sum(row["tokens_after"] for row in built.report["eval_data"].values()) == sum(
        len(built.after(s, add_special_tokens=False)["input_ids"]) for s in sequences)


def test_special_tokens_keep_their_ids_and_new_ones_follow(built):
    before, after = built.before, built.after
    specials = range(128_000, 128_256)
    assert after.convert_ids_to_tokens(list(specials)) == before.convert_ids_to_tokens(list(specials))
    assert (after.bos_token_id, after.eos_token_id, after.pad_token_id) == (
        before.bos_token_id, before.eos_token_id, before.pad_token_id)
    vocabulary = built.report["vocabulary"]
    assert vocabulary["dna"] == 300 and vocabulary["protein"] == 100
    assert len(after) == vocabulary["after"] == 128_256 + 400
    assert read_card(built.out).vocabulary["new_token_ids"] == list(range(128_256, 128_656))
    assert AutoModelForCausalLM.from_pretrained(built.out).get_input_embeddings().weight.shape[0] == len(after)


def test_plain_transformers_loads_the_tokenizer(built):
    text = PROSE + heldout_sequences()[0]
    expected = built.after(text)["input_ids"]
    assert AutoTokenizer.from_pretrained(built.out)(text)["input_ids"] == expected
    fast = PreTrainedTokenizerFast(tokenizer_file=str(built.out / "tokenizer.json"))
    assert fast(text, add_special_tokens=False)["input_ids"] == expected[1:]  # the file alone: no BOS setting
    assert json.loads((built.out / "tokenizer_config.json").read_text()).get("auto_map") is None  # no remote code


def test_new_rows_start_as_the_mean_of_the_pieces_they_replace(built, tiny_model):
    base, extended = (AutoModelForCausalLM.from_pretrained(path) for path in (tiny_model, built.out))
    for get in ("get_input_embeddings", "get_output_embeddings"):
        old, new = getattr(base, get)().weight, getattr(extended, get)().weight
        assert torch.equal(new[:128_256], old)
        for token_id in (128_256, 128_400, 128_655):
            token = built.after.convert_ids_to_tokens(token_id)
            pieces = built.before(token, add_special_tokens=False)["input_ids"]
            assert len(pieces) > 1
            torch.testing.assert_close(new[token_id], old[pieces].mean(dim=0))


def test_words_containing_a_text():
    assert words_containing("AT", 2) == ["AT"]
    assert len(words_containing("AT", 3)) == 1 + 2 * 26  # xAT and ATx, none the same word
    assert words_containing("aT", 3) == [] and words_containing("A1", 3) == []


def test_guard_refuses_a_merge_that_would_change_a_protected_word(tokenizer):
    guard = TextGuard(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("(NADPH", add_special_tokens=False)["input_ids"])
    assert len(tokens) >= 2
    assert not guard.allows(tokens[-2], tokens[-1])  # NADPH after a bracket would lose its tokens
    short = tokenizer.convert_ids_to_tokens(tokenizer("QXZ", add_special_tokens=False)["input_ids"])
    assert len(short) >= 2 and not guard.allows(short[0], short[1])  # every word up to 3 letters
    assert guard.allows("ACGTG", "TTAC")  # a DNA piece no protected word holds


def test_stage1_lora_trains_the_new_rows_and_saves_them(built):
    root = built.root / "stage1"
    shutil.copy(SAMPLES / "stage1_train.txt", root.mkdir() or root / "train.txt")
    with pytest.MonkeyPatch.context() as mp:
        rc = cli(mp, root, "stage1", "train", "--data", "train.txt", "--base-model", str(built.out), "--set",
                 "max_length=64", "--set", "micro_batch_size=4", "--set", "grad_accum=1", "--set", "lora_r=4",
                 "--set", "max_steps=2", "--set", "warmup_ratio=0", "--set", "learning_rate=0.05",
                 "--set", "gradient_checkpointing=false")
    assert rc == 0
    before = AutoModelForCausalLM.from_pretrained(built.out)
    trained = AutoModelForCausalLM.from_pretrained(root / "archive/models/stage1")
    moved = {get: (getattr(trained, get)().weight - getattr(before, get)().weight).abs().amax(dim=1)
             for get in ("get_input_embeddings", "get_output_embeddings")}
    assert moved["get_output_embeddings"][128_256:].gt(0).all()  # every output row has a gradient
    assert moved["get_input_embeddings"][128_256:].gt(0).sum() >= 10  # the input rows of the tokens read
    for rows in moved.values():
        assert torch.equal(rows[:128_000], torch.zeros(128_000))  # the original vocabulary stays frozen
    card = read_card(root / "archive/models/stage1")
    assert card.vocabulary == read_card(built.out).vocabulary and new_vocabulary_rows(root / "archive/models/stage1") \
        == []  # carried along, and trained: Stage 2 does not train them again


def test_full_fine_tuning_must_train_the_embeddings(built):
    model = load_model(built.out)
    with pytest.raises(UserError, match="train_embeddings=true"):
        prepare_for_training(model, built.after, TrainConfig(finetune="full"), new_vocabulary_rows(built.out))


def test_bits_per_residue_count_the_same_residues_under_both_tokenizers(built):
    """Item 4: the residues a window accounts for do not depend on the tokenizer, even when sequences are cut
    into several windows (so bits per residue compare across vocabularies)."""
    path = SAMPLES / "stage1_heldout.txt"
    totals = {}
    for name, tokenizer in (("before", built.before), ("after", built.after)):
        windows = list(sequence_windows(path, tokenizer, 32, False, DataReport(str(path))))
        totals[name] = (sum(residues for _, _, residues in windows), sum(len(ids) for ids, _, _ in windows))
    assert totals["before"][0] == totals["after"][0] == sum(map(len, heldout_sequences()))
    assert totals["after"][1] < totals["before"][1]


def test_a_file_without_sequences_is_refused_by_name(tiny_model, tmp_path, monkeypatch, caplog):
    (tmp_path / "notes.txt").write_text("This is a header line\nno sequences here, only prose.\n")
    rc = cli(monkeypatch, tmp_path, "vocab", "build", "--data", "notes.txt", "--out", "vocab",
             "--base-model", str(tiny_model))
    assert rc == 2
    assert "notes.txt: no valid sequence in 2 lines" in caplog.text  # and why, line by line
    assert not (tmp_path / "vocab").exists()  # nothing left behind


def test_an_existing_vocabulary_is_not_replaced_without_overwrite(built, tiny_model, monkeypatch, caplog):
    written = (built.out / "tokenizer.json").stat().st_mtime_ns
    rc = cli(monkeypatch, built.root, "vocab", "build", "--data", str(SAMPLES / "stage1_train.txt"), "--out",
             "base-vocab", "--base-model", str(tiny_model))
    assert rc == 2 and "pass --overwrite to replace it" in caplog.text
    assert (built.out / "tokenizer.json").stat().st_mtime_ns == written
