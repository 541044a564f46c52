"""The packing correctness property on the real (tiny) model: packed examples do not see each other.

transformers 5 derives a block-diagonal causal mask from restarting `position_ids` when no attention_mask
is passed AND no KV cache is in use (`use_cache=False`; the HF Trainer sets `config.use_cache = False`).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from omics.config import TrainConfig
from omics.data.packing import IGNORE, PackedCollator, pack
from omics.train import OmicsTrainer, training_arguments

ATOL = 1e-4


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request, tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=request.param).eval()


@pytest.fixture(scope="module")
def pair(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Two windows as Stage 1 builds them: BOS + sequence tokens (+ EOS)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    a = [bos, *tokenizer("ACGTTGCAACGGATTACA", add_special_tokens=False)["input_ids"], eos]
    b = [bos, *tokenizer("MKVLAAGITW", add_special_tokens=False)["input_ids"], eos]
    return torch.tensor([a]), torch.tensor([b])


def positions(*lengths: int) -> torch.Tensor:
    return torch.cat([torch.arange(n) for n in lengths])[None]


@torch.no_grad()
def logits(model, input_ids, **kwargs) -> torch.Tensor:
    return model(input_ids=input_ids, use_cache=False, **kwargs).logits[0]


def test_packed_row_equals_separate_runs(model, pair):
    a, b = pair
    na, nb = a.shape[1], b.shape[1]
    packed = logits(model, torch.cat([a, b], dim=1), position_ids=positions(na, nb))
    torch.testing.assert_close(packed[:na], logits(model, a), atol=ATOL, rtol=0)
    torch.testing.assert_close(packed[na:], logits(model, b), atol=ATOL, rtol=0)


def test_three_examples_and_padding_segment(model, pair, tokenizer):
    """A, B, A again, then padding with its own restarting positions (as PackedCollator lays it out)."""
    a, b = pair
    na, nb, pad = a.shape[1], b.shape[1], 5
    ids = torch.cat([a, b, a, torch.full((1, pad), tokenizer.pad_token_id)], dim=1)
    packed = logits(model, ids, position_ids=positions(na, nb, na, pad))
    alone_a, alone_b = logits(model, a), logits(model, b)
    torch.testing.assert_close(packed[:na], alone_a, atol=ATOL, rtol=0)
    torch.testing.assert_close(packed[na : na + nb], alone_b, atol=ATOL, rtol=0)
    torch.testing.assert_close(packed[na + nb : 2 * na + nb], alone_a, atol=ATOL, rtol=0)


def test_without_restarting_positions_b_differs(model, pair):
    """The control: one continuous sequence lets B attend to A, so the property above can fail."""
    a, b = pair
    na = a.shape[1]
    alone_b = logits(model, b)
    for kwargs in ({}, {"position_ids": torch.arange(na + b.shape[1])[None]}):
        packed = logits(model, torch.cat([a, b], dim=1), **kwargs)
        torch.testing.assert_close(packed[:na], logits(model, a), atol=ATOL, rtol=0)  # A is first: unaffected
        assert (packed[na:] - alone_b).abs().max() > 1e-2


def test_with_kv_cache_the_packed_mask_is_not_derived(model, pair):
    """Pitfall, documented: with a KV cache (use_cache=True, the config default in eval mode) transformers
    builds a plain causal mask even when position ids restart, so B attends to A. Outside the Trainer,
    packed forwards must pass use_cache=False."""
    a, b = pair
    na = a.shape[1]
    with torch.no_grad():
        packed = model(input_ids=torch.cat([a, b], dim=1), position_ids=positions(na, b.shape[1]),
                       use_cache=True).logits[0]
    assert (packed[na:] - logits(model, b)).abs().max() > 1e-2


def test_trainer_loss_on_packed_batch_equals_separate_losses(tiny_model, tokenizer, tmp_path):
    """End to end through what training uses: pack → PackedCollator → OmicsTrainer.compute_loss."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    texts = ["ACGTACGGATTACA", "MKVLAAGITWWY", "ACGUACGUUUAG", "GATTACA", "MSTNPKPQRK"]
    examples = []
    for text in texts:
        ids = [bos, *tokenizer(text, add_special_tokens=False)["input_ids"], eos]
        examples.append((ids, list(ids)))
    blocks = list(pack(examples, block_len=16))
    assert len(blocks) >= 2 and any(len(b["lengths"]) > 1 for b in blocks)
    batch = PackedCollator(tokenizer.pad_token_id)(blocks)
    config = TrainConfig(max_length=16, micro_batch_size=len(blocks), grad_accum=1, max_steps=1)
    trainer = OmicsTrainer(model=model, args=training_arguments(config, tmp_path, False),
                           data_collator=PackedCollator(tokenizer.pad_token_id), train_config=config)
    assert trainer.model.config.use_cache is False  # what makes the block-diagonal mask apply
    trainer.model.eval()
    with torch.no_grad():
        packed_loss = trainer.compute_loss(trainer.model, dict(batch)).item()
        total, count = 0.0, 0
        for ids, _ in examples:
            row = torch.tensor([ids])
            total += model(input_ids=row, labels=row, use_cache=False).loss.item() * (len(ids) - 1)
            count += len(ids) - 1
    assert (batch["labels"] != IGNORE).sum().item() == count
    assert packed_loss == pytest.approx(total / count, abs=1e-4)


def test_one_row_collation_gives_the_same_logits(tiny_model):
    """Flash-attention's layout (all blocks end to end in one row) keeps the same examples apart."""
    import random

    from transformers import AutoModelForCausalLM

    from omics.data.packing import PackedCollator, pack

    rng = random.Random(0)
    examples = [([128000] + [rng.randrange(1000, 5000) for _ in range(n - 1)],) * 2 for n in (9, 14, 5, 11, 7)]
    blocks = list(pack(examples, 20))
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    rows, flat = PackedCollator(128004)(blocks), PackedCollator(128004, one_row=True)(blocks)
    assert flat["input_ids"].shape == (1, rows["input_ids"].numel())
    with torch.no_grad():
        by_row = model(input_ids=rows["input_ids"], position_ids=rows["position_ids"], use_cache=False).logits
        one_row = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"], use_cache=False).logits
    torch.testing.assert_close(one_row.reshape(by_row.shape), by_row, atol=1e-4, rtol=1e-4)
