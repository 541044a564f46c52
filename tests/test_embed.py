"""`omics embed`: vectors checked against the model's own hidden states, the index, FASTA, bad lines, batching,
long sequences cut into chunks, and a run killed with SIGKILL that resumes to the same vectors."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch
from helpers import cli
from kill import run_in_child, run_killed
from transformers import AutoModelForCausalLM

from omics.sequence_tools.embedding import embed_sequences
from omics.sequence_tools.records import read_records

SEQUENCES = ["ACGTTGCAAGGCTTAACG", "MKVLAAGIVGLLLAWQ", "ACGUUGCAAGG", "GATTACAGATTACA" * 6]


@pytest.fixture(scope="module")
def hf_model(tiny_model):
    """The plain transformers model, fp32: what the vectors are computed by hand from."""
    return AutoModelForCausalLM.from_pretrained(tiny_model).eval()


def states(hf_model, tokenizer, sequence: str, layer: int = -1) -> torch.Tensor:
    """HF's own `hidden_states[layer]` of BOS + the sequence's tokens, (tokens, hidden)."""
    ids = [tokenizer.bos_token_id, *tokenizer(sequence, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        return hf_model(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer][0]


def embed(monkeypatch, tmp_path, tiny_model, data, *extra: str, name: str = "v.npy") -> tuple[int, np.ndarray | None]:
    out = tmp_path / name
    code = cli(monkeypatch, tmp_path, "embed", "--model", str(tiny_model), "--data", str(data), "--out", str(out),
               *extra)
    return code, np.load(out) if code == 0 else None


def test_mean_of_the_last_hidden_states_over_the_sequence_tokens(tmp_path, tiny_model, hf_model, tokenizer,
                                                                 monkeypatch, write_file):
    data = write_file("seqs.txt", [SEQUENCES[0], "", *SEQUENCES[1:]])  # a blank line: line numbers skip it
    code, vectors = embed(monkeypatch, tmp_path, tiny_model, data)
    assert code == 0 and vectors.shape == (4, 64) and vectors.dtype == np.float32
    for vector, sequence in zip(vectors, SEQUENCES, strict=True):  # BOS (position 0) left out of the mean
        np.testing.assert_allclose(vector, states(hf_model, tokenizer, sequence)[1:].mean(0).numpy(), atol=1e-5)
    with (tmp_path / "v.index.tsv").open() as handle:
        index = list(csv.reader(handle, delimiter="\t"))
    assert index == [["row", "id", "line", "length", "molecule"], ["0", "1", "1", "18", "dna"],
                     ["1", "3", "3", "16", "protein"], ["2", "4", "4", "11", "rna"], ["3", "5", "5", "84", "dna"]]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".v.npy")]  # no hidden leftovers

    first = (tmp_path / "v.npy").read_bytes()
    assert embed(monkeypatch, tmp_path, tiny_model, data)[0] == 2  # refused without --overwrite
    assert embed(monkeypatch, tmp_path, tiny_model, data, "--overwrite")[0] == 0
    assert (tmp_path / "v.npy").read_bytes() == first  # deterministic

    code, layer1 = embed(monkeypatch, tmp_path, tiny_model, data, "--layer", "1", name="l1.npy")
    assert code == 0 and not np.allclose(layer1, vectors)
    np.testing.assert_allclose(layer1[0], states(hf_model, tokenizer, SEQUENCES[0], 1)[1:].mean(0), atol=1e-5)
    code, last = embed(monkeypatch, tmp_path, tiny_model, data, "--layer", "-3", "--pool", "last", name="e.npy")
    assert code == 0  # -3 of a 2-layer model = 0, the token embeddings: the last token's own row
    np.testing.assert_allclose(last[1], hf_model.model.embed_tokens.weight[
        tokenizer(SEQUENCES[1], add_special_tokens=False)["input_ids"][-1]].detach(), atol=1e-6)


def test_fasta_records_span_lines_and_take_their_ids(write_file, tmp_path, tiny_model, monkeypatch):
    data = write_file("seqs.fa", [">chr1 a description", "ACGTACGTTT", "acgta", "", ">p2", "MKVLA", "AGIVG"])
    assert [(r.id, r.line, r.sequence, r.molecule) for r in read_records(data)] == [
        ("chr1", 1, "ACGTACGTTTACGTA", "dna"), ("p2", 5, "MKVLAAGIVG", "protein")]
    code, vectors = embed(monkeypatch, tmp_path, tiny_model, data)
    assert code == 0 and vectors.shape == (2, 64)
    assert (tmp_path / "v.index.tsv").read_text().splitlines()[1:] == ["0\tchr1\t1\t15\tdna", "1\tp2\t5\t10\tprotein"]


@pytest.mark.parametrize(("lines", "message"), [
    (["ACGT", "ACGT", "ACGTJJ1"], "seqs.txt:3: text, not a sequence"),
    (["ACGT", "MKVJJ"], "seqs.txt:2: letters outside the DNA, RNA and protein alphabets"),
    ([">a", "ACGT", ">b", ">c", "ACGT"], "seqs.txt:3: FASTA record 'b' has no sequence"),
], ids=["text", "letters", "empty-record"])
def test_a_bad_line_is_named_and_nothing_is_written(write_file, tmp_path, tiny_model, monkeypatch, caplog, lines,
                                                    message):
    data = write_file("seqs.txt", lines)
    assert embed(monkeypatch, tmp_path, tiny_model, data)[0] == 2
    assert message in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seqs.txt"]


def test_a_layer_the_model_lacks_is_refused(write_file, tmp_path, tiny_model, monkeypatch, caplog):
    assert embed(monkeypatch, tmp_path, tiny_model, write_file("s.txt", ["ACGT"]), "--layer", "3")[0] == 2
    assert "--layer 3: this model has 2 layers; pass 0..2 or -3..-1" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.txt"]  # refused before anything is written


def test_batching_by_length_gives_the_vectors_of_one_by_one(tiny_model, tokenizer):
    from omics.model import load_model

    model = load_model(tiny_model).eval()
    sequences = [s[: n] for s in SEQUENCES for n in (5, 9, len(s))]
    together = embed_sequences(model, tokenizer, sequences, 2, "mean", 2048, batch_tokens=4096)
    alone = np.stack([embed_sequences(model, tokenizer, [s], 2, "mean", 2048, 4096)[0] for s in sequences])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_a_long_sequence_is_cut_into_chunks_and_averaged(tiny_model, hf_model, tokenizer):
    """--max-length 8: BOS + 7 tokens per chunk, each chunk read from its own BOS, the mean over all tokens."""
    from omics.model import load_model

    sequence = SEQUENCES[3]
    ids = tokenizer(sequence, add_special_tokens=False)["input_ids"]
    assert len(ids) > 14  # three chunks at least
    chunk_states = []
    with torch.no_grad():
        for start in range(0, len(ids), 7):
            chunk = [tokenizer.bos_token_id, *ids[start : start + 7]]
            chunk_states.append(hf_model(torch.tensor([chunk]), output_hidden_states=True).hidden_states[-1][0, 1:])
    expected = torch.cat(chunk_states).mean(0).numpy()
    vector = embed_sequences(load_model(tiny_model).eval(), tokenizer, [sequence], 2, "mean", 8, 4096)[0]
    np.testing.assert_allclose(vector, expected, atol=1e-5)


def test_killed_run_resumes_to_the_same_vectors(tmp_path, tiny_model, write_file, monkeypatch):
    """Two windows of sequences; SIGKILL as the second starts: nothing visible, --resume finishes it."""
    rng = random.Random(0)
    data = write_file("many.txt", ["".join(rng.choices("ACGT", k=rng.randint(4, 12))) for _ in range(4200)])
    argv = ["embed", "--model", str(tiny_model), "--data", str(data)]
    assert cli(monkeypatch, tmp_path, *argv, "--out", "straight.npy") == 0
    run_killed(tmp_path, [*argv, "--out", "v.npy"], "omics.sequence_tools.embedding:embed_sequences", nth=2)
    assert not (tmp_path / "v.npy").exists() and not (tmp_path / "v.index.tsv").exists()
    assert json.loads((tmp_path / ".v.npy.progress.json").read_text())["done"] == 4096  # the first window is kept
    assert cli(monkeypatch, tmp_path, *argv, "--out", "v.npy") == 2  # an interrupted run is not silently redone
    assert run_in_child(tmp_path, [*argv, "--out", "v.npy", "--resume"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), np.load(tmp_path / "straight.npy"), atol=1e-6)
    assert (tmp_path / "v.index.tsv").read_text() == (tmp_path / "straight.index.tsv").read_text()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".v.npy")]


def test_bf16_run(write_file, tmp_path, tiny_model, hf_model, tokenizer, monkeypatch):
    code, vectors = embed(monkeypatch, tmp_path, tiny_model, write_file("s.txt", SEQUENCES[:2]), "--dtype", "bf16")
    assert code == 0 and vectors.dtype == np.float32 and np.isfinite(vectors).all()
    expected = states(hf_model, tokenizer, SEQUENCES[0])[1:].mean(0).numpy()
    np.testing.assert_allclose(vectors[0], expected, atol=0.1 * np.abs(expected).max())  # bf16: ~3 digits
