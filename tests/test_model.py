"""Model set-up and saving: chat-row repair, LoRA + norms, and a merged model that keeps what was trained."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from omics.config import SYSTEM_PROMPT, TrainConfig
from omics.errors import UserError
from omics.model import (
    CHAT_TOKENS,
    NORM_MODULES,
    chat_token_ids,
    end_of_turn_id,
    load_tokenizer,
    prepare_for_training,
    repair_untrained_rows,
    require_model_dir,
    save_trained,
)

PAD = "<|finetune_right_pad_id|>"


def load(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model)


# -------------------------------------------------------------------------------------------- tokenizer


def test_load_tokenizer_pad_is_not_a_stop_token(tokenizer):
    assert tokenizer.pad_token == PAD
    assert tokenizer.pad_token_id not in (tokenizer.eos_token_id, end_of_turn_id(tokenizer))
    assert tokenizer.padding_side == "right" and not tokenizer.chat_template
    assert len(tokenizer) == 128_256


@pytest.mark.parametrize("pad", ["<|end_of_text|>", "<|eot_id|>", None])
def test_load_tokenizer_replaces_stop_token_pad(tiny_model, tmp_path, pad):
    (tmp_path / "tokenizer.json").symlink_to(tiny_model / "tokenizer.json")
    config = json.loads((tiny_model / "tokenizer_config.json").read_text())
    config["pad_token"] = pad
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    fixed = load_tokenizer(tmp_path, chat=False)
    assert fixed.pad_token == PAD and fixed.pad_token_id != fixed.eos_token_id


def test_chat_template(tiny_model):
    chat = load_tokenizer(tiny_model, chat=True)
    text = chat.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                    add_generation_prompt=True)
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + SYSTEM_PROMPT + "<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_require_model_dir(tmp_path, tiny_model):
    assert require_model_dir(tiny_model, "hint") == tiny_model
    with pytest.raises(UserError, match="no model at .*Download it"):
        require_model_dir(tmp_path / "absent", "Download it.")


# ------------------------------------------------------------------------------------ untrained rows


def test_repair_untrained_rows(tiny_model, tokenizer):
    model = load(tiny_model)
    ids = chat_token_ids(tokenizer)
    matrices = [model.get_input_embeddings().weight, model.get_output_embeddings().weight]
    before = [m.detach().clone() for m in matrices]
    for m in before:
        assert m[ids].abs().max() == 0  # the tiny model mimics Llama-3 base: chat rows never trained
    others = torch.ones(before[0].shape[0], dtype=torch.bool)
    others[ids] = False

    assert repair_untrained_rows(model, tokenizer) == sorted(CHAT_TOKENS)

    for old, new in zip(before, matrices, strict=True):
        mean = old[others].mean(dim=0)
        for token_id in ids:
            torch.testing.assert_close(new[token_id], mean)
        assert torch.equal(new[others], old[others])  # every other row untouched


def test_repair_twice_keeps_the_values(tiny_model, tokenizer):
    """On the tiny random model the mean row has a norm of ~5e-4, below the 'trained' threshold (0.1 x median
    row norm), so a second call reports the same tokens again; it writes the same mean, so values are stable."""
    model = load(tiny_model)
    assert repair_untrained_rows(model, tokenizer) == sorted(CHAT_TOKENS)
    once = model.get_input_embeddings().weight.detach().clone()
    assert repair_untrained_rows(model, tokenizer) == sorted(CHAT_TOKENS)
    assert torch.equal(model.get_input_embeddings().weight, once)


def test_repair_leaves_a_trained_model_alone(tiny_model, tokenizer):
    model = load(tiny_model)
    with torch.no_grad():
        for matrix in (model.get_input_embeddings(), model.get_output_embeddings()):
            matrix.weight[chat_token_ids(tokenizer)] = 1.0
    before = model.get_input_embeddings().weight.detach().clone()
    assert repair_untrained_rows(model, tokenizer) == []
    assert torch.equal(model.get_input_embeddings().weight, before)


# ------------------------------------------------------------------------------------------ set-up


def trainable(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_lora_with_norms_trains_adapters_and_norms_only(tiny_model, tokenizer):
    model = prepare_for_training(load(tiny_model), tokenizer, TrainConfig(lora_r=4, train_norms=True))
    names = trainable(model)
    norms = [n for n in names if "norm" in n]
    # 2 layers x (input, post-attention) + the final norm, each as a saved module copy
    assert len(norms) == 5 and all("modules_to_save" in n for n in norms)
    assert {n for n in names if "lora_" in n} and all("lora_" in n or "norm" in n for n in names)
    assert not [n for n in names if "embed_tokens" in n or "lm_head" in n]
    assert not [n for n in names if "base_layer" in n]


def test_lora_without_norms(tiny_model, tokenizer):
    model = prepare_for_training(load(tiny_model), tokenizer, TrainConfig(lora_r=4, train_norms=False))
    assert all("lora_" in n for n in trainable(model))


def test_full_finetune_freezes_embeddings_only(tiny_model, tokenizer):
    model = prepare_for_training(load(tiny_model), tokenizer, TrainConfig(finetune="full"))
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert sorted(frozen) == ["lm_head.weight", "model.embed_tokens.weight"]


def test_fully_trained_lora_target_overlap_is_refused(tiny_model, tokenizer):
    config = TrainConfig(lora_r=4, fully_trained_modules=["q_proj"])
    with pytest.raises(ValueError, match="both LoRA targets and fully trained"):
        prepare_for_training(load(tiny_model), tokenizer, config)


# ------------------------------------------------------------------------------ train, save, reload


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """LoRA + norms + chat rows, a few AdamW steps, then save_trained with a chat tokenizer."""
    chat = load_tokenizer(tiny_model, chat=True)
    model = load(tiny_model)
    repair_untrained_rows(model, chat)
    config = TrainConfig(lora_r=4, lora_alpha=8, train_norms=True, train_chat_token_rows=True)
    peft_model = prepare_for_training(model, chat, config)
    text = chat.apply_chat_template([{"role": "user", "content": "ACGT?"}, {"role": "assistant",
                                     "content": "DNA"}], tokenize=False)
    ids = torch.tensor([chat(text, add_special_tokens=False)["input_ids"]])
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(0)
    peft_model.train()
    for _ in range(3):
        peft_model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.eval()
    inner = peft_model.base_model.model
    q = inner.model.layers[0].self_attn.q_proj
    expected = {
        "model.layers.0.input_layernorm.weight":
            inner.model.layers[0].input_layernorm.modules_to_save["default"].weight,
        "model.layers.1.post_attention_layernorm.weight":
            inner.model.layers[1].post_attention_layernorm.modules_to_save["default"].weight,
        "model.norm.weight": inner.model.norm.modules_to_save["default"].weight,
        "model.layers.0.self_attn.q_proj.weight": q.base_layer.weight + q.get_delta_weight("default"),
    }
    expected = {k: v.detach().clone() for k, v in expected.items()}
    with torch.no_grad():
        peft_logits = peft_model(input_ids=ids).logits.clone()
    out = tmp_path_factory.mktemp("trained") / "stage"
    assert save_trained(peft_model, chat, out) == out
    return {"dir": out, "ids": ids, "expected": expected, "logits": peft_logits, "chat": chat}


def test_norms_changed_by_training(trained):
    for name in ("model.layers.0.input_layernorm.weight", "model.norm.weight"):
        assert (trained["expected"][name] - 1.0).abs().max() > 1e-3  # RMSNorm weights start at 1


def test_saved_model_has_trained_norms(trained):
    reloaded = AutoModelForCausalLM.from_pretrained(trained["dir"])
    state = reloaded.state_dict()
    for name in ("model.layers.0.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight",
                 "model.norm.weight"):
        assert torch.equal(state[name], trained["expected"][name]), name


def test_saved_model_has_merged_lora(trained, tiny_model):
    reloaded = AutoModelForCausalLM.from_pretrained(trained["dir"])
    merged = reloaded.model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(merged, trained["expected"]["model.layers.0.self_attn.q_proj.weight"],
                               atol=1e-6, rtol=0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).model.layers[0].self_attn.q_proj.weight
    assert (merged - base).abs().max() > 1e-4  # the adapter did change it
    with torch.no_grad():
        logits = reloaded(input_ids=trained["ids"]).logits
    torch.testing.assert_close(logits, trained["logits"], atol=1e-4, rtol=0)
    assert not any("lora" in k or "modules_to_save" in k for k in reloaded.state_dict())


def test_adapter_dir_reloads_with_peft(trained, tiny_model):
    adapter = trained["dir"] / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 4 and set(NORM_MODULES) <= set(config["modules_to_save"])
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter).eval()
    with torch.no_grad():
        logits = model(input_ids=trained["ids"]).logits
    torch.testing.assert_close(logits, trained["logits"], atol=1e-4, rtol=0)


def test_saved_tokenizer_and_generation_config(trained):
    out = trained["dir"]
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.pad_token == PAD
    assert saved.pad_token_id not in (saved.eos_token_id, saved.convert_tokens_to_ids("<|eot_id|>"))
    assert saved.chat_template  # the chat format travels with the model
    generation = GenerationConfig.from_pretrained(out)
    eos = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
    assert end_of_turn_id(trained["chat"]) in eos and saved.eos_token_id in eos
    assert generation.pad_token_id == saved.pad_token_id
    assert not (out / ".staging").exists()


def test_save_full_model_without_chat(tiny_model, tokenizer, tmp_path):
    model = prepare_for_training(load(tiny_model), tokenizer, TrainConfig(finetune="full"))
    out = tmp_path / "full"
    (out / "checkpoints" / "checkpoint-1").mkdir(parents=True)  # save never touches checkpoints
    save_trained(model, tokenizer, out)
    assert not (out / "adapter").exists() and (out / "checkpoints" / "checkpoint-1").is_dir()
    generation = GenerationConfig.from_pretrained(out)
    assert generation.eos_token_id == tokenizer.eos_token_id  # no chat template: stop at end of text
    assert AutoTokenizer.from_pretrained(out).pad_token == PAD
