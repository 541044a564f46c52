"""Each library internal omics/compat.py relies on, checked against the installed versions on real objects.

A failure names the library and version that changed, and what omics assumed of it.
"""

from __future__ import annotations

import inspect
from importlib import metadata

import pytest
import torch
from peft.tuners.trainable_tokens import TrainableTokensLayer
from transformers import Trainer

from omics.compat import (
    _rows_forward,
    attention_of,
    merged_weight,
    scheduled_adamw_8bit,
    token_layer,
    trained_rows,
    unwrap_optimizer,
)
from omics.config import TrainConfig
from omics.data.packing import PackedCollator, pack
from omics.model import chat_token_ids, load_model, load_tokenizer, prepare_for_training
from omics.optim import StepInBackward
from omics.train import OmicsTrainer, training_arguments


def expect(library: str, holds: bool, what: str) -> None:
    """Fail loudly: which library, which version, which assumption of omics/compat.py no longer holds."""
    assert holds, f"{library} {metadata.version(library)} changed: {what} (omics/compat.py relies on it)"


@pytest.fixture
def token_rows_model(tiny_model):
    """Stage 2's set-up (LoRA + trained chat-token rows), the trained rows moved off PEFT's initial copy."""
    tokenizer = load_tokenizer(tiny_model, chat=True)
    config = TrainConfig(lora_r=4, lora_alpha=8, train_chat_token_rows=True, gradient_checkpointing=False)
    model = prepare_for_training(load_model(tiny_model, attn="sdpa"), tokenizer, config)
    with torch.no_grad():
        for layer in (token_layer(m) for m in model.modules()):
            if layer is not None:
                layer.trainable_tokens_delta["default"].add_(torch.randn_like(layer.trainable_tokens_delta["default"]))
    return model, chat_token_ids(tokenizer)


def test_peft_keeps_trained_rows_where_compat_reads_them(token_rows_model):
    model, rows = token_rows_model
    base = model.get_base_model()
    for module in (base.get_input_embeddings(), base.get_output_embeddings()):
        layer = token_layer(module)
        expect("peft", layer is not None, "the trainable-tokens wrapper no longer keeps its layer as `token_adapter`")
        expect("peft", layer.active_adapters == ["default"] and not layer.merged and not layer.disable_adapters,
               "TrainableTokensLayer's active_adapters/merged/disable_adapters")
        expect("peft", list(layer.token_indices["default"]) == rows, "token_indices[adapter] is not the row list")
        delta = layer.trainable_tokens_delta["default"]
        weight = layer.get_base_layer().weight
        expect("peft", delta.shape == (len(rows), weight.shape[1]),
               f"trainable_tokens_delta[adapter] has shape {tuple(delta.shape)}, not (rows, width)")
        expect("peft", layer._get_embed_scale() is None, "_get_embed_scale() is gone or scales Llama's embedding")
        merged = layer.get_merged_weights(layer.active_adapters)
        expect("peft", torch.equal(merged, merged_weight(module)),
               "get_merged_weights is no longer the base weight with the trained rows copied in")


def test_row_forward_computes_what_peft_forward_does(token_rows_model):
    model, rows = token_rows_model
    base = model.get_base_model()
    ids = torch.tensor([[128000, rows[0], 1500, rows[2], rows[1], 77]])
    hidden = torch.randn(1, 6, base.config.hidden_size)
    for module, x in ((base.get_input_embeddings(), ids), (base.get_output_embeddings(), hidden)):
        layer = token_layer(module)
        expect("peft", layer.forward.__func__ is _rows_forward, "use_row_forward could not replace the forward")
        torch.testing.assert_close(_rows_forward(layer, x), TrainableTokensLayer.forward(layer, x),
                                   msg=lambda m: f"peft {metadata.version('peft')}: its forward changed: {m}")


def test_merged_layer_holds_its_rows_in_the_base_weight(token_rows_model):
    model, rows = token_rows_model
    layer = token_layer(model.get_base_model().get_input_embeddings())
    delta = layer.trainable_tokens_delta["default"].detach().clone()
    layer.merge()
    weight, indices, _ = trained_rows(layer)
    expect("peft", layer.merged and indices is None, "merge() no longer sets `merged`")
    expect("peft", torch.equal(weight[rows], delta), "merge() no longer copies the trained rows into the weight")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_transformers_reports_the_attention_a_model_runs(tiny_model, attn):
    expect("transformers", attention_of(load_model(tiny_model, attn=attn)) == attn,
           "config._attn_implementation no longer names the attention implementation loaded")


def test_trainer_steps_the_step_in_backward_optimizer_through_accelerate(tiny_model, tmp_path):
    """The fake optimizer plugs into HF Trainer + accelerate: wrapped, stepped, scheduled, its norm logged."""
    tokenizer = load_tokenizer(tiny_model, chat=False)
    config = TrainConfig(finetune="full", optimizer_in_backward=True, max_steps=2, micro_batch_size=1, grad_accum=1,
                         max_length=32, logging_steps=1, save_steps=100, gradient_checkpointing=False,
                         learning_rate=1e-3, warmup_ratio=0.0)
    model = prepare_for_training(load_model(tiny_model, attn="sdpa"), tokenizer, config)
    examples = [([128000] + list(range(1000 + i, 1020 + i)), [-100] * 11 + list(range(1010 + i, 1020 + i)))
                for i in range(4)]
    trainer = OmicsTrainer(model=model, args=training_arguments(config, tmp_path, has_eval=False),
                           train_dataset=list(pack(examples, config.max_length)),
                           data_collator=PackedCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                           train_config=config)
    trainer.train()
    inner = unwrap_optimizer(trainer.optimizer)
    expect("accelerate", isinstance(inner, StepInBackward) and inner is not trainer.optimizer,
           "the Trainer's optimizer is no longer an AcceleratedOptimizer wrapping ours as `.optimizer`")
    norms = [entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry]
    expect("transformers", len(norms) == 2 and all(n > 0 for n in norms) and norms[-1] == float(inner.grad_norm),
           f"the Trainer no longer steps our optimizer once per step or logs grad_norm (logged {norms})")
    expect("transformers", inner.param_groups[0]["lr"] == trainer.lr_scheduler.get_last_lr()[0],
           "the scheduler no longer sets the learning rate of the optimizer the Trainer was given")


def test_torchao_8bit_adamw_keeps_lr_as_a_tensor_and_steps_with_a_scheduler():
    weight = torch.nn.Parameter(torch.ones(256, 256))  # torchao quantises states of tensors with >= 4096 elements
    optimizer = scheduled_adamw_8bit([{"params": [weight]}], lr=1e-2)
    expect("torchao", torch.is_tensor(optimizer.param_groups[0]["lr"]),
           "AdamW8bit no longer keeps lr as a tensor (scheduled_adamw_8bit's conversion may be dropped)")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)  # writes float learning rates
    weight.grad = torch.ones_like(weight)
    optimizer.step()
    scheduler.step()
    before = weight.detach().clone()
    optimizer.step()
    expect("torchao", bool((weight < before).all()), "AdamW8bit after a scheduler's float lr no longer steps")


def test_trainer_loads_the_best_checkpoint_by_the_method_compat_calls():
    method = getattr(Trainer, "_load_best_model", None)
    assert callable(method) and list(inspect.signature(method).parameters) == ["self"], (
        f"transformers {metadata.version('transformers')} changed Trainer._load_best_model "
        "(omics/compat.py load_best_checkpoint relies on it)")


def test_grpo_reference_is_the_adapter_disabled_once_its_copy_is_dropped(tiny_model, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from trl.trainer import grpo_trainer

    from omics.compat import drop_reference_copy

    tokenizer = load_tokenizer(tiny_model, chat=True)
    model = prepare_for_training(load_model(tiny_model), tokenizer,
                                 TrainConfig(lora_r=4, train_norms=False, gradient_checkpointing=False))
    trainer = GRPOTrainer(
        model=model, reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        args=GRPOConfig(output_dir=str(tmp_path), beta=0.04, num_generations=2, per_device_train_batch_size=2,
                        max_completion_length=4, use_cpu=True, report_to="none"),
        train_dataset=Dataset.from_list([{"prompt": "ACGT"}] * 2), processing_class=tokenizer)
    expect("trl", "ref" in trainer.model.peft_config, "GRPOTrainer copies a PeftModel's adapter as its reference 'ref'")
    expect("trl", 'adapter_name="ref" if "ref" in model.peft_config else None' in inspect.getsource(grpo_trainer),
           "without a 'ref' adapter, GRPO's reference log-probabilities come from the model with its adapter disabled")
    drop_reference_copy(trainer.model)
    assert list(trainer.model.peft_config) == ["default"]
