"""The true-class probability read from generation log-probabilities, and the vLLM request path."""

from __future__ import annotations

import math
import sys
import types

import pytest

from omics.evaluate.confidence import true_class_probability
from omics.evaluate.generate import Generation, make_backend
from omics.evaluate.tasks import TaskSpec

BINARY = TaskSpec(task="emp-x", family="emp", type="binary", paper_metric="MCC", classes=["negative", "positive"])
MULTI = TaskSpec(task="NoncodingRNAFamily-x", family="NoncodingRNAFamily", type="multiclass",
                 paper_metric="accuracy", classes=["adenine", "guanine"])


def _generation(tokenizer, text: str, alternatives: dict[str, float]) -> Generation:
    """Greedy tokens of `text`; at every step the listed words' first tokens get these probabilities."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    top = [{tokenizer(word, add_special_tokens=False)["input_ids"][0]: math.log(p)
            for word, p in alternatives.items()} for _ in ids]
    return Generation(text, ids, top)


def test_probability_of_the_true_class_at_the_deciding_token(tokenizer):
    generation = _generation(tokenizer, "The sequence is positive.", {" positive": 0.7, " negative": 0.2})
    assert true_class_probability(generation, BINARY, True, True, tokenizer) == pytest.approx(0.7)
    assert true_class_probability(generation, BINARY, False, True, tokenizer) == pytest.approx(0.2)


def test_multiclass_reads_the_class_name(tokenizer):
    generation = _generation(tokenizer, "The dominant nucleotide is guanine.", {" gu": 0.6, " aden": 0.3})
    assert true_class_probability(generation, MULTI, "adenine", "guanine", tokenizer) == pytest.approx(0.3)


def test_no_reading_when_the_answer_decides_by_other_wording(tokenizer):
    negated = _generation(tokenizer, "The sequence is not positive.", {" positive": 0.9})
    assert true_class_probability(negated, BINARY, False, False, tokenizer) is None  # "not positive" → negative
    silent = _generation(tokenizer, "I cannot tell.", {" positive": 0.9})
    assert true_class_probability(silent, BINARY, True, None, tokenizer) is None


def test_stage3_reads_only_inside_the_answer(tokenizer):
    text = "<reasoning>It could be negative but GC is high.</reasoning> <answer>It is positive.</answer>"
    generation = _generation(tokenizer, text, {" positive": 0.8, " negative": 0.1})
    assert true_class_probability(generation, BINARY, True, True, tokenizer, answer_tag=True) == pytest.approx(0.8)
    # without the tag rule the reasoning's "negative" would decide, disagreeing with the prediction
    assert true_class_probability(generation, BINARY, True, True, tokenizer) is None
    # an output without tags is read whole, as its prediction was (format-noncompliant fallback)
    untagged = _generation(tokenizer, "It is positive.", {" positive": 0.8})
    assert true_class_probability(untagged, BINARY, True, True, tokenizer, answer_tag=True) == pytest.approx(0.8)


def test_vllm_path_up_to_the_engine_call(monkeypatch, tiny_model):
    """vLLM is not installable here: a stand-in module records what our backend hands to the engine."""
    seen: dict = {}

    class LLM:
        def __init__(self, **kwargs):
            seen["engine"] = kwargs

        def generate(self, requests, params, use_tqdm=True):
            seen["requests"], seen["params"] = requests, params
            return []

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    monkeypatch.setattr("omics.evaluate.generate.has_package", lambda name: True)
    monkeypatch.setattr("omics.evaluate.generate.use_cuda", lambda: True)
    backend = make_backend("auto", tiny_model, 32, 4096)
    assert backend.name == "vllm" and seen["engine"]["model"] == str(tiny_model)
    from omics.evaluate.stream import PromptIds

    list(backend.stream([PromptIds(backend.tokenizer, None)("Is <dna>ACGT<dna> GC-rich?", "system")[0]]))
    expected = backend.tokenizer.apply_chat_template(
        [{"role": "system", "content": "system"}, {"role": "user", "content": "Is <dna>ACGT<dna> GC-rich?"}],
        add_generation_prompt=True, tokenize=True)["input_ids"]
    assert seen["requests"] == [{"prompt_token_ids": expected}]  # identical ids, one BOS
    assert expected.count(128000) == 1
    params = seen["params"]
    assert params.temperature == 0.0 and params.max_tokens == 32 and params.logprobs > 0
    assert params.stop_token_ids == [128009, 128001]  # <|eot_id|>, <|end_of_text|>


def test_vllm_requested_without_it_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="needs a GPU and vLLM"):
        make_backend("vllm", tiny_model, 8, 1024)


FAMILIES = TaskSpec(task="NoncodingRNAFamily-y", family="NoncodingRNAFamily", type="multiclass",
                    paper_metric="accuracy", classes=["5S_rRNA", "Intron_gpI", "Intron_gpII", "riboswitch"])


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_classes_sharing_their_first_token_give_no_reading(tokenizer):
    # " Intron_gpI" and " Intron_gpII" start with the same token: at that token the model has not yet chosen
    assert _ids(tokenizer, " Intron_gpI")[0] == _ids(tokenizer, " Intron_gpII")[0]
    generation = _generation(tokenizer, "The family is Intron_gpI.", {" In": 0.97})
    assert true_class_probability(generation, FAMILIES, "Intron_gpII", "Intron_gpI", tokenizer) is None
    # a right answer still reads its probability
    assert true_class_probability(generation, FAMILIES, "Intron_gpI", "Intron_gpI", tokenizer) is not None


def test_word_after_a_bare_space_token_is_read_at_its_own_token(tokenizer):
    text = "The family is 5S_rRNA."
    ids = _ids(tokenizer, text)
    pieces = [tokenizer.decode([i]) for i in ids]
    assert " " in pieces  # Llama-3 puts a bare space token before a word starting with a digit
    first = _ids(tokenizer, "5S_rRNA")[0]
    top = [{first: math.log(0.6), _ids(tokenizer, " rib")[0]: math.log(0.3)} for _ in ids]
    generation = Generation(text, ids, top)
    assert true_class_probability(generation, FAMILIES, "5S_rRNA", "5S_rRNA", tokenizer) == pytest.approx(0.6)


def test_stage3_reads_the_last_answer_block(tokenizer):
    text = "<answer>It is negative.</answer> <answer>It is positive.</answer>"
    generation = _generation(tokenizer, text, {" positive": 0.9, " negative": 0.05})
    assert true_class_probability(generation, BINARY, True, True, tokenizer, answer_tag=True) == pytest.approx(0.9)
