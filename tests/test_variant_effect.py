"""`omics variant-effect`: llr checked against the model's logits, the sign convention, indels with shared
flanks, FASTA references, and every refusal named by file:line."""

from __future__ import annotations

import csv

import pytest
import torch
from helpers import cli
from transformers import AutoModelForCausalLM

from omics.sequence_tools.variants import read_variants

# 40 bases; pos 21 (1-based) is the G of ...ACGTG|CATTG...
SEQUENCE = "TTGACCGTAAGCTTAGCAGTGCATTGACCAGTTACGGATC"
HEADER = "id\tsequence\tpos\tref\talt"


def score(monkeypatch, tmp_path, tiny_model, write_file, lines: list[str], *extra: str) -> tuple[int, list[dict]]:
    data = write_file("variants.tsv", lines)
    out = tmp_path / "scores.tsv"
    code = cli(monkeypatch, tmp_path, "variant-effect", "--model", str(tiny_model), "--data", str(data),
               "--out", str(out), "--overwrite", *extra)
    if code:
        return code, []
    with out.open() as handle:
        return code, list(csv.DictReader(handle, delimiter="\t"))


@pytest.fixture(scope="module")
def hf_model(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model).eval()


def by_hand(model, tokenizer, text: str) -> float:
    """ln p(text | BOS) from the logits: each token's log-softmax at the position before it, summed."""
    ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return sum(torch.log_softmax(logits[i - 1], -1)[ids[i]].item() for i in range(1, len(ids)))


def test_llr_is_alt_minus_ref_window_log_likelihood(monkeypatch, tmp_path, tiny_model, hf_model, tokenizer,
                                                      write_file):
    assert SEQUENCE[20] == "G"
    code, rows = score(monkeypatch, tmp_path, tiny_model, write_file, [HEADER, f"v1\t{SEQUENCE}\t21\tG\tA,T"],
                       "--window", "20")
    assert code == 0 and [(r["id"], r["alt"], r["window"]) for r in rows] == [("v1", "A", "11-31"),
                                                                              ("v1", "T", "11-31")]
    ref_window = SEQUENCE[10:31]  # 10 bases before pos 21, the G, 10 after
    alt_window = ref_window[:10] + "A" + ref_window[11:]
    ref_ll, alt_ll = by_hand(hf_model, tokenizer, ref_window), by_hand(hf_model, tokenizer, alt_window)
    assert float(rows[0]["ref_ll"]) == pytest.approx(ref_ll, abs=1e-4)
    assert float(rows[0]["alt_ll"]) == pytest.approx(alt_ll, abs=1e-4)
    assert float(rows[0]["llr"]) == pytest.approx(alt_ll - ref_ll, abs=1e-4)


def test_sign_convention_and_indels_keep_the_flanks(monkeypatch, tmp_path, tiny_model, write_file):
    """The same change seen from either allele's sequence scores ±llr; an insertion's windows share the flanks."""
    inserted = SEQUENCE[:21] + "TT" + SEQUENCE[21:]
    mutated = SEQUENCE[:20] + "A" + SEQUENCE[21:]
    code, rows = score(monkeypatch, tmp_path, tiny_model, write_file, [
        HEADER, f"snv\t{SEQUENCE}\t21\tG\tA", f"back\t{mutated}\t21\tA\tG",
        f"ins\t{SEQUENCE}\t21\tG\tGTT", f"del\t{inserted}\t21\tGTT\tG"], "--window", "16")
    assert code == 0
    llr = {r["id"]: float(r["llr"]) for r in rows}
    assert llr["snv"] == pytest.approx(-llr["back"], abs=1e-4) and llr["snv"] != 0
    assert llr["ins"] == pytest.approx(-llr["del"], abs=1e-4)
    ins, deletion = list(read_variants(tmp_path / "variants.tsv", 16, {}))[2:]
    assert ins.ref_window == SEQUENCE[12:29] and ins.alt_window == SEQUENCE[12:21] + "TT" + SEQUENCE[21:29]
    assert deletion.ref_window == ins.alt_window and deletion.alt_window == ins.ref_window


def test_reference_from_a_fasta_record(monkeypatch, tmp_path, tiny_model, write_file):
    write_file("ref/genome.fa", [">chr2 test", SEQUENCE[:25], SEQUENCE[25:].lower(), ">chr3", "ACGT"])
    code, rows = score(monkeypatch, tmp_path, tiny_model, write_file,
                       ["#chrom\tfasta\tpos\tref\talt", "chr2\tref/genome.fa\t21\tG\tA",
                        "chr2\tref/genome.fa\t1\tT\tC"], "--window", "20")
    assert code == 0 and [r["window"] for r in rows] == ["11-31", "1-11"]  # the second clipped at the start
    _, inline = score(monkeypatch, tmp_path, tiny_model, write_file, [HEADER, f"v\t{SEQUENCE}\t21\tG\tA"],
                      "--window", "20")
    assert rows[0]["llr"] == inline[0]["llr"]


@pytest.mark.parametrize(("row", "message"), [
    (f"v\t{SEQUENCE}\t21\tC\tA", "variants.tsv:2: ref C does not match the row's sequence at pos 21 (G)"),
    (f"v\t{SEQUENCE}\t40\tCG\tA", "variants.tsv:2: pos 40 with ref CG lies outside the row's sequence (40 bases"),
    (f"v\t{SEQUENCE}\t0\tT\tA", "variants.tsv:2: pos 0 with ref T lies outside"),
    (f"v\t{SEQUENCE}\tx\tT\tA", "variants.tsv:2: pos 'x' is not a whole number"),
    (f"v\t{SEQUENCE}\t21\tG\t<DEL>", "variants.tsv:2: alt '<DEL>' is a symbolic or missing allele"),
    (f"v\t{SEQUENCE}\t21\tG\tA,*", "variants.tsv:2: alt '*' is a symbolic or missing allele"),
    ("v\tACGT ACGT\t1\tA\tG", "variants.tsv:2: the sequence column is text, not a sequence"),
], ids=["ref-mismatch", "past-the-end", "pos-0", "pos-not-a-number", "symbolic", "star-allele", "text-sequence"])
def test_bad_variants_are_refused_by_line(monkeypatch, tmp_path, tiny_model, write_file, caplog, row, message):
    assert score(monkeypatch, tmp_path, tiny_model, write_file, [HEADER, row])[0] == 2
    assert message in caplog.text and not (tmp_path / "scores.tsv").exists()


def test_a_header_without_the_columns_is_refused(monkeypatch, tmp_path, tiny_model, write_file, caplog):
    assert score(monkeypatch, tmp_path, tiny_model, write_file, ["pos\tref\talt", "1\tA\tG"])[0] == 2
    assert "variants.tsv:1: header lacks column(s) sequence (or fasta and chrom)" in caplog.text


def test_bf16_run(monkeypatch, tmp_path, tiny_model, hf_model, tokenizer, write_file):
    code, rows = score(monkeypatch, tmp_path, tiny_model, write_file, [HEADER, f"v\t{SEQUENCE}\t21\tG\tA"],
                       "--dtype", "bf16", "--window", "20")
    assert code == 0
    assert float(rows[0]["ref_ll"]) == pytest.approx(by_hand(hf_model, tokenizer, SEQUENCE[10:31]), rel=0.02)


def test_a_chrom_the_fasta_lacks_is_refused(monkeypatch, tmp_path, tiny_model, write_file, caplog):
    write_file("genome.fa", [">chr2", SEQUENCE])
    assert score(monkeypatch, tmp_path, tiny_model, write_file,
                 ["chrom\tfasta\tpos\tref\talt", "chr9\tgenome.fa\t21\tG\tA"])[0] == 2
    assert "variants.tsv:2: chrom chr9 is not a record of " in caplog.text
    caplog.clear()
    assert score(monkeypatch, tmp_path, tiny_model, write_file,
                 ["chrom\tfasta\tpos\tref\talt", "chr2\tnope.fa\t21\tG\tA"])[0] == 2
    assert "variants.tsv:2: fasta nope.fa: no such file" in caplog.text


@pytest.mark.parametrize("line, extra, message", [
    ("s\t{seq}\t21\tG\tG", (), "variants.tsv:2: alt G equals ref: not a variant"),
    ("s\t{seq}\t21\tG\tA", ("--window", "0"), "--window must be at least 2 bases"),
])
def test_what_is_not_a_variant_is_refused(monkeypatch, tmp_path, tiny_model, write_file, caplog, line, extra,
                                          message):
    lines = ["id\tsequence\tpos\tref\talt", line.format(seq=SEQUENCE)]
    assert score(monkeypatch, tmp_path, tiny_model, write_file, lines, *extra)[0] == 2
    assert message in caplog.text
