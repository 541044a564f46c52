"""Generation backends on the tiny model: order kept whatever the batching, left padding is harmless, choice."""

from __future__ import annotations

import pytest

from omics.config import SYSTEM_PROMPT
from omics.data.instructions import prompt_text
from omics.device import has_package, use_cuda
from omics.evaluate.generate import Generation, HFBackend, make_backend

MAX_NEW = 6
QUESTIONS = [
    "Is <dna>ACGT<dna> GC-rich?",
    "What is the GC content of this long DNA sequence <dna>" + "ACGTTGCA" * 12 + "<dna>?",
    "Is this protein soluble? <protein>MKKLLPTAAAGLLLLAAQPAMAW<protein>",
    "Which family? <rna>GGAUCCGAUCGAUCGGAUCCAGUCAGU<rna>",
    "Hi",
    "Predict the mRNA remaining percentage for <rna>a g c u a dA dC dG u a<rna> and <dna>CGCGAATAGAATAC<dna>.",
]


@pytest.fixture(scope="module")
def backend(tiny_model) -> HFBackend:
    return HFBackend.load(tiny_model, max_new_tokens=MAX_NEW, batch_tokens=10**6)


@pytest.fixture(scope="module")
def prompts(backend) -> list[str]:
    return [prompt_text(backend.tokenizer, q, SYSTEM_PROMPT) for q in QUESTIONS]


@pytest.fixture(scope="module")
def alone(backend, prompts) -> list[Generation]:
    """Reference: each prompt alone (batch of one, no padding)."""
    return [backend.generate([p])[0] for p in prompts]


@pytest.fixture(scope="module")
def one_at_a_time(alone) -> list[tuple[str, list[int]]]:
    return [(g.text, g.token_ids) for g in alone]


def greedy(generations: list[Generation]) -> list[tuple[str, list[int]]]:
    assert all(isinstance(g, Generation) for g in generations)
    return [(g.text, g.token_ids) for g in generations]


def generate_with(backend: HFBackend, prompts: list[str], batch_tokens: int) -> list[tuple[str, list[int]]]:
    backend.batch_tokens, old = batch_tokens, backend.batch_tokens
    try:
        return greedy(backend.generate(prompts))
    finally:
        backend.batch_tokens = old


def test_backend_settings(backend):
    # batches are padded on the left per call; the shared tokenizer (saved with models) is left as it was
    assert backend.tokenizer.padding_side == "right"
    assert backend.tokenizer.chat_template
    assert backend.tokenizer.convert_tokens_to_ids("<|eot_id|>") in backend.stop_ids
    assert backend.tokenizer.pad_token_id not in backend.stop_ids
    assert not backend.model.training


def test_reference_outputs_are_distinct(one_at_a_time):
    """Otherwise the order tests below could not tell prompts apart."""
    assert all(isinstance(text, str) and ids for text, ids in one_at_a_time)
    assert len({text for text, _ in one_at_a_time}) >= 4, one_at_a_time


def test_generation_records_greedy_log_probabilities(backend, alone):
    stops = set(backend.stop_ids)
    for generation in alone:
        assert len(generation.token_ids) <= MAX_NEW and not stops & set(generation.token_ids)
        assert backend.tokenizer.decode(generation.token_ids, skip_special_tokens=True).strip() == generation.text
        assert len(generation.top_logprobs) == len(generation.token_ids)
        for token, step in zip(generation.token_ids, generation.top_logprobs, strict=True):
            assert max(step, key=step.get) == token  # greedy: the chosen token is the most probable
            assert all(lp <= 0 for lp in step.values())


def test_left_padding_keeps_log_probabilities(backend, prompts, alone):
    backend.batch_tokens = 10**6
    batched = backend.generate(prompts)
    for one, many in zip(alone, batched, strict=True):
        for a, b in zip(one.top_logprobs, many.top_logprobs, strict=True):
            assert max(a, key=a.get) == max(b, key=b.get)
            assert max(a.values()) == pytest.approx(max(b.values()), abs=1e-4)


def test_batching_plan(backend, prompts):
    lengths = [len(ids) for ids in backend.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    for budget in (1, 300, 700, 10**6):
        backend.batch_tokens = budget
        try:
            batches = backend._batches(lengths)
        finally:
            backend.batch_tokens = 10**6
        assert sorted(i for b in batches for i in b) == list(range(len(prompts)))
        for batch in batches:
            width = max(lengths[i] for i in batch) + MAX_NEW
            assert len(batch) == 1 or width * len(batch) <= budget
        if budget == 400:  # the middle setting really mixes padded batches of several prompts
            assert len(batches) > 1 and max(len(b) for b in batches) > 1
        if budget == 1:
            assert all(len(b) == 1 for b in batches)
    assert backend._batches(lengths) == [sorted(range(len(lengths)), key=lambda i: -lengths[i])]


@pytest.mark.parametrize("batch_tokens", [1, 400, 10**6])
def test_outputs_in_input_order_whatever_the_batching(backend, prompts, one_at_a_time, batch_tokens):
    """batch_tokens=1 puts every prompt alone; 10**6 puts all in one left-padded batch; 400 in between."""
    assert generate_with(backend, prompts, batch_tokens) == one_at_a_time


def test_order_follows_the_input_list(backend, prompts, one_at_a_time):
    order = [3, 0, 5, 1, 4, 2]
    assert generate_with(backend, [prompts[i] for i in order], 10**6) == [one_at_a_time[i] for i in order]


def test_duplicate_prompts(backend, prompts, one_at_a_time):
    assert generate_with(backend, [prompts[1], prompts[4], prompts[1]], 10**6) == [
        one_at_a_time[1], one_at_a_time[4], one_at_a_time[1]]


def test_empty_prompt_list(backend):
    assert backend.generate([]) == []


@pytest.mark.skipif(has_package("vllm") and use_cuda(), reason="vLLM and a GPU are present")
def test_make_backend_vllm_without_vllm_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError) as err:
        make_backend("vllm", tiny_model, MAX_NEW, 8192)
    message = str(err.value)
    assert "vllm" in message.lower() and "--backend hf" in message


@pytest.mark.skipif(use_cuda(), reason="on a GPU, auto may pick vLLM")
def test_make_backend_auto_is_hf_on_cpu(tiny_model):
    chosen = make_backend("auto", tiny_model, MAX_NEW, 1234)
    assert isinstance(chosen, HFBackend) and chosen.name == "hf"
    assert chosen.max_new_tokens == MAX_NEW and chosen.batch_tokens == 1234


def test_make_backend_hf(tiny_model):
    assert isinstance(make_backend("hf", tiny_model, MAX_NEW, 8192), HFBackend)
