"""The smaller leaks at scale (issue 19 item 8): each fixed, each checked on the real code path."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import cli, head

from omics.config import TrainConfig
from omics.evaluate.likelihood import hidden_states
from omics.loss import answer_only_loss
from omics.model import load_model, load_tokenizer, prepare_for_training
from omics.optim import StepInBackward, optimizer_factory
from omics.train import training_arguments


def test_likelihood_pass_builds_no_kv_cache(tiny_model):
    model = load_model(tiny_model).eval()
    ids = torch.randint(1000, 5000, (2, 16))
    with torch.no_grad():
        out = hidden_states(model, ids, torch.ones_like(ids))
    assert out.past_key_values is None and out.last_hidden_state.shape == (2, 16, model.config.hidden_size)


def test_torch_compile_compiles_the_decoder_the_loss_calls(tiny_model, tmp_path):
    config = TrainConfig(lora_r=4, torch_compile=True, gradient_checkpointing=False)
    model = prepare_for_training(load_model(tiny_model), load_tokenizer(tiny_model, chat=True), config)
    assert model.get_base_model().model._compiled_call_impl is not None  # what answer_only_loss calls
    assert not training_arguments(config, tmp_path, has_eval=False).torch_compile  # not the unused model.forward


def test_auto_max_length_is_chosen_once_per_data(tiny_model, tmp_path, monkeypatch):
    """A second run (and --resume) on the same data reads the chosen max_length instead of tokenising again."""
    import omics.data.instructions as instructions

    (tmp_path / "train.jsonl").write_text("\n".join(head("stage2_train.jsonl", 6)) + "\n")
    real, calls = instructions.chat_examples, []

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(instructions, "chat_examples", counted)
    fast = [f"--set={s}" for s in ("max_length=0", "max_steps=1", "micro_batch_size=2", "grad_accum=1", "lora_r=4",
                                   "gradient_checkpointing=false")]
    for run in ("a", "b"):
        assert cli(monkeypatch, tmp_path, "stage2", "train", "--data", "train.jsonl", "--base-model", str(tiny_model),
                   "--output-dir", f"models/{run}", "--metrics-dir", f"metrics/{run}", *fast) == 0
        if run == "a":
            assert len(calls) == 2  # the length pass, then the packed data
    assert len(calls) == 2  # the second run tokenised nothing: both the length and the data came from the cache
    chosen = {json.loads((tmp_path / f"metrics/{r}/parameters.json").read_text())["config"]["max_length"]
              for r in "ab"}
    assert len(chosen) == 1 and chosen.pop() % 128 == 0


def test_step_in_backward_sums_the_gradient_norm_on_the_device():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    reference = [p.detach().clone() for p in model.parameters()]
    optimizer = StepInBackward([{"params": list(model.parameters()), "lr": 0.0}],
                               optimizer_factory(TrainConfig(), bf16_weights=False))
    loss = model(torch.randn(5, 8)).pow(2).mean()
    grads = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
    loss.backward()
    assert torch.is_tensor(optimizer.squared_norm)  # accumulated per weight without a host read
    optimizer.step()
    expected = torch.cat([g.flatten() for g in grads]).norm()
    torch.testing.assert_close(optimizer.grad_norm, expected)
    assert all(torch.equal(a, b) for a, b in zip(reference, model.parameters(), strict=True))  # lr 0


@pytest.fixture
def chat_rows_model(tiny_model):
    """The Stage 2 set-up: LoRA + trained norms + trained chat-token rows, every trained weight moved off its init."""
    tokenizer = load_tokenizer(tiny_model, chat=True)
    config = TrainConfig(lora_r=4, lora_alpha=8, train_chat_token_rows=True, gradient_checkpointing=False)
    model = prepare_for_training(load_model(tiny_model, attn="sdpa"), tokenizer, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model


def test_trained_token_rows_without_the_merged_matrix_give_peft_results(chat_rows_model, monkeypatch):
    from peft.tuners.trainable_tokens import TrainableTokensLayer

    model = chat_rows_model
    merged, real_merge = [], TrainableTokensLayer.get_merged_weights
    monkeypatch.setattr(TrainableTokensLayer, "get_merged_weights",
                        lambda self, adapters: merged.append(self) or real_merge(self, adapters))
    layers = [m for m in model.modules() if isinstance(m, TrainableTokensLayer)]
    rows = layers[0].token_indices["default"]
    ids = torch.tensor([[128000, rows[0], 1500, rows[2], rows[1], 2000, 77, rows[2]]])
    labels = ids.clone()
    labels[:, :2] = -100
    batch = {"input_ids": ids, "position_ids": torch.arange(ids.shape[1])[None], "labels": labels}
    trained = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(loss_fn):
        model.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in trained]

    ours = loss_and_grads(lambda: answer_only_loss(model, dict(batch)))
    assert not merged  # neither the embedding nor the head was copied whole
    embedded = model.get_input_embeddings()(ids)
    for layer in layers:
        del layer.forward  # PEFT's own forward: the whole matrix rebuilt with the trained rows copied in
    assert torch.equal(model.get_input_embeddings()(ids), embedded)
    merged.clear()
    theirs = loss_and_grads(lambda: model(**batch, use_cache=False).loss)
    assert len(merged) == 2  # PEFT's path: one whole copy of each matrix per forward
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-6, rtol=1e-6)
    for a, b in zip(ours[1], theirs[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
