"""`answer_only_loss` (vocabulary projection only where a label exists) equals the model's own HF loss."""

from __future__ import annotations

import json

import pytest
import torch

from omics.config import TrainConfig
from omics.data.instructions import chat_examples
from omics.data.packing import IGNORE, PackedCollator, pack
from omics.data.validate import DataReport
from omics.loss import answer_only_loss

BLOCK = 96


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_model):
    from omics.model import load_tokenizer

    return load_tokenizer(tiny_model, chat=True)


@pytest.fixture(scope="module")
def fp32_model(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval()


@pytest.fixture(scope="module")
def examples(chat_tokenizer, tmp_path_factory) -> list[tuple[list[int], list[int]]]:
    """Chat examples of different lengths (short system prompt: the full-vocabulary reference is costly)."""
    records = [{"input": f"Question {i}: is <dna>{'ACGT' * (i + 1)}<dna> GC-rich?",
                "output": f"The answer to question {i} is {'positive' if i % 2 else 'negative'}." + " More." * i,
                "label": "positive" if i % 2 else "negative", "task": "emp-x"} for i in range(5)]
    path = tmp_path_factory.mktemp("loss") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = TrainConfig(max_length=BLOCK, system_prompt="Be brief.")
    return list(chat_examples(path, chat_tokenizer, config, DataReport(str(path)), {}))


@pytest.fixture(scope="module")
def packed_batch(chat_tokenizer, examples) -> dict[str, torch.Tensor]:
    """Two packed blocks of different fill (so the shorter one is padded), several examples each."""
    blocks = list(pack(examples, BLOCK))
    assert len(blocks) >= 2 and any(len(b["lengths"]) > 1 for b in blocks)
    batch = PackedCollator(chat_tokenizer.pad_token_id)(blocks)
    assert (batch["input_ids"] == chat_tokenizer.pad_token_id).any()  # one block is padded
    return batch


def hf_loss(model, batch, **kwargs) -> torch.Tensor:
    """The model's own loss on the packed batch. `use_cache=False`: with a KV cache (the default outside
    training) transformers does not derive the packed block-diagonal mask from the position ids."""
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"],
                     use_cache=False, **kwargs).loss


def unpacked_loss(model, examples) -> torch.Tensor:
    """Mean token loss with every example run on its own: what packing must not change."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in examples:
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
            targets = torch.tensor(labels[1:])
            keep = targets != IGNORE
            total += torch.nn.functional.cross_entropy(logits[keep].float(), targets[keep], reduction="sum").item()
            count += int(keep.sum())
    return torch.tensor(total / count)


def test_answer_only_loss_equals_hf_loss(fp32_model, packed_batch):
    with torch.no_grad():
        ours = answer_only_loss(fp32_model, dict(packed_batch))
    theirs = hf_loss(fp32_model, packed_batch)
    assert torch.isfinite(ours)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)


def test_answer_only_loss_equals_unpacked_loss(fp32_model, examples, packed_batch):
    """No attention across the examples of a block, no loss on padding or across example boundaries."""
    with torch.no_grad():
        ours = answer_only_loss(fp32_model, dict(packed_batch))
    assert ours.item() == pytest.approx(unpacked_loss(fp32_model, examples).item(), abs=1e-5)


def test_answer_only_loss_with_num_items_in_batch(fp32_model, packed_batch):
    labels = packed_batch["labels"][:, 1:]
    count = int((labels != IGNORE).sum())
    num_items = 3 * count + 7  # as when the batch is one of several accumulated micro-batches
    with torch.no_grad():
        mean = answer_only_loss(fp32_model, dict(packed_batch))
        ours = answer_only_loss(fp32_model, dict(packed_batch), num_items_in_batch=num_items)
        ours_tensor = answer_only_loss(fp32_model, dict(packed_batch), num_items_in_batch=torch.tensor(num_items))
    theirs = hf_loss(fp32_model, packed_batch, num_items_in_batch=num_items)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    assert ours.item() == pytest.approx(mean.item() * count / num_items, rel=1e-5)
    assert ours_tensor.item() == pytest.approx(ours.item(), rel=1e-6)


def test_answer_only_loss_gradients_match(fp32_model, packed_batch):
    """Same gradients as the HF loss: what the trainer optimises is the usual objective."""
    params = [fp32_model.model.norm.weight, fp32_model.lm_head.weight]
    fp32_model.zero_grad()
    answer_only_loss(fp32_model, dict(packed_batch)).backward()
    ours = [p.grad.clone() for p in params]
    fp32_model.zero_grad()
    fp32_model(input_ids=packed_batch["input_ids"], position_ids=packed_batch["position_ids"],
               labels=packed_batch["labels"], use_cache=False).loss.backward()
    theirs = [p.grad.clone() for p in params]
    fp32_model.zero_grad()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_answer_only_loss_through_peft(tiny_model, chat_tokenizer, packed_batch):
    """On the LoRA-wrapped model (adapters, trained norms and chat-token rows made non-trivial) as trained."""
    from transformers import AutoModelForCausalLM

    from omics.model import prepare_for_training

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa")
    config = TrainConfig(lora_r=4, lora_alpha=8, train_chat_token_rows=True)
    model = prepare_for_training(base, chat_tokenizer, config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:  # LoRA B starts at zero and token deltas too: move everything trained
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
        ours = answer_only_loss(model, dict(packed_batch))
        theirs = model(input_ids=packed_batch["input_ids"], position_ids=packed_batch["position_ids"],
                       labels=packed_batch["labels"], use_cache=False).loss
        plain = hf_loss(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), packed_batch)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    assert abs(ours.item() - plain.item()) > 1e-3  # the adapter really changed the model


def test_sliced_checkpointed_projection_gives_the_same_loss_and_gradients(fp32_model, packed_batch, monkeypatch):
    """The fallback that never holds more than one slice of logits is the same objective."""
    params = [fp32_model.model.norm.weight, fp32_model.lm_head.weight]
    fp32_model.zero_grad()
    whole = answer_only_loss(fp32_model, dict(packed_batch))
    whole.backward()
    expected = [p.grad.clone() for p in params]
    fp32_model.zero_grad()
    monkeypatch.setattr("omics.loss.LOGIT_SLICE", 3)  # several slices even on this small batch
    sliced = answer_only_loss(fp32_model, dict(packed_batch))
    sliced.backward()
    assert sliced.item() == pytest.approx(whole.item(), rel=1e-6)
    for a, b in zip([p.grad for p in params], expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    fp32_model.zero_grad()
