"""Model and tokenizer: load, repair the base model's untrained chat rows, LoRA or full set-up, save.

Everything that is trained is saved: RMSNorm weights and fully trained projections go through PEFT's
`modules_to_save`, chat-token rows through `trainable_token_indices`, so both the adapter and the merged
model carry them (a known failure of reproductions is training norms and dropping them at save time).
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from omics.compat import use_row_forward
from omics.config import SYSTEM_PROMPT, TrainConfig
from omics.device import attention_implementation, model_dtype, weights_dtype
from omics.errors import UserError
from omics.model_card import ModelCard, find_card
from omics.runs import sibling

log = logging.getLogger("omics")

CHAT_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
END_OF_TURN = "<|eot_id|>"
NORM_MODULES = ["input_layernorm", "post_attention_layernorm", "model.norm"]


def _jinja_string(text: str) -> str:
    """`text` as a single-quoted Jinja string literal (Jinja unescapes literals as Python's unicode-escape)."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def chat_template(system_prompt: str) -> str:
    """Llama-3.1's chat format with `system_prompt` as the default system turn: a saved model prompted without
    a system message (plain transformers, vLLM, chat UIs) sees the prompt it was trained with."""
    return (
        "{{- bos_token }}"
        "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
        "{%- set messages = messages[1:] %}{%- else %}{%- set system = " + _jinja_string(system_prompt) +
        " %}{%- endif %}"
        "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + system | trim + '<|eot_id|>' }}"
        "{%- for message in messages %}"
        "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
        " + '<|eot_id|>' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
    )


CHAT_TEMPLATE = chat_template(SYSTEM_PROMPT)  # the paper's


def require_model_dir(path: str | Path, hint: str) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        if (sibling(path, "old") / "config.json").is_file():
            hint = (f"An --overwrite training that did not complete set the previous model aside in "
                    f"{sibling(path, 'old')}: rerun that training to restore it (or with --resume to finish it).")
        raise UserError(f"no model at {path} (no config.json there). {hint}")
    return path


def load_tokenizer(path: str | Path, chat: bool, system_prompt: str | None = None) -> PreTrainedTokenizerBase:
    """The base tokenizer with pad ≠ stop token; with `chat`, the chat template of `system_prompt` (default: the
    one the model folder's omics_model.json records, else the paper's)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None or tokenizer.pad_token_id in (tokenizer.eos_token_id, end_of_turn_id(tokenizer)):
        tokenizer.pad_token = "<|finetune_right_pad_id|>"
    if chat:
        card = find_card(path)
        tokenizer.chat_template = chat_template(system_prompt or (card.system_prompt if card else SYSTEM_PROMPT))
    tokenizer.padding_side = "right"
    return tokenizer


def has_chat_template(path: str | Path) -> bool:
    """Whether a saved model already speaks the chat format (then its chat rows are trained, not repaired)."""
    path = Path(path)
    if (path / "chat_template.jinja").is_file():
        return True
    config = path / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.convert_tokens_to_ids(END_OF_TURN)


def load_model(path: str | Path, attn: str = "auto", dtype: str = "auto") -> PreTrainedModel:
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=model_dtype(dtype), attn_implementation=attention_implementation(attn)
    )
    if torch.cuda.is_available():
        model.to("cuda")
    return model


def repair_untrained_rows(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Give the chat tokens' untrained (near-zero) embedding rows the mean of the trained rows.

    Llama-3 base never saw `<|start_header_id|>`, `<|end_header_id|>`, `<|eot_id|>`: with their rows near
    zero, chat fine-tuning spikes or never learns to stop. Returns the tokens repaired.
    """
    repaired = []
    with torch.no_grad():
        for matrix in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())}.values():
            weight = matrix.weight
            norms = weight.float().norm(dim=-1)
            trained = norms > 0.1 * norms.median()
            mean = weight[trained].float().mean(dim=0).to(weight.dtype)
            for token in CHAT_TOKENS:
                token_id = tokenizer.convert_tokens_to_ids(token)
                if not trained[token_id]:
                    weight[token_id] = mean
                    repaired.append(token)
    if repaired:
        log.info("repaired untrained embedding rows (set to the mean row): %s", sorted(set(repaired)))
    return sorted(set(repaired))


def chat_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in CHAT_TOKENS]


def new_vocabulary_rows(path: str | Path) -> list[int]:
    """The rows of a sequence vocabulary's tokens that no training has seen yet: those of a folder written by
    `omics vocab build` (a model trained from it has trained them)."""
    card = find_card(path)
    return list(card.vocabulary["new_token_ids"]) if card and card.stage == "vocab" and card.vocabulary else []


def prepare_for_training(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, config: TrainConfig,
                         new_rows: list[int] | None = None):
    """What the config trains (LoRA + norms, projections, chat rows, a new vocabulary's `new_rows`; or all
    weights), with fp32 copies of LoRA's few trained weights (1e-4 steps survive rounding), activation
    checkpointing and compilation as configured."""
    model = _trainable(model, tokenizer, config, new_rows or [])
    if config.finetune == "lora":
        trained_in_fp32(model)
    if config.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                              every_n_layers=config.checkpoint_every_n_layers)
    if config.torch_compile:  # the decoder, which the loss calls: the Trainer's option compiles model.forward
        inner = model.get_base_model() if isinstance(model, PeftModel) else model
        inner.model.compile()
    return model


def trained_in_fp32(model: torch.nn.Module) -> None:
    """fp32 copies of LoRA's few trained weights: 1e-4 steps survive rounding."""
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()


def _trainable(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, config: TrainConfig,
               new_rows: list[int]):
    if config.finetune == "full" and new_rows and not config.train_embeddings:
        raise UserError(f"the base model's {len(new_rows)} new sequence-token rows (omics vocab build) are untrained: "
                        "full fine-tuning must train the embeddings: --set train_embeddings=true")
    if config.finetune == "full":
        for name, param in model.named_parameters():
            embedding = "embed_tokens" in name or "lm_head" in name
            param.requires_grad = config.train_embeddings or not embedding
        return model
    model = get_peft_model(model, lora_config(tokenizer, config, new_rows))
    use_row_forward(model)
    return model


def lora_config(tokenizer: PreTrainedTokenizerBase | None, config: TrainConfig, new_rows: Sequence[int] = ()
                ) -> LoraConfig:
    """What LoRA trains: the adapters, plus the norms, projections, chat-token rows and a new vocabulary's rows the
    config trains in full."""
    modules_to_save = (NORM_MODULES if config.train_norms else []) + list(config.fully_trained_modules)
    overlap = set(config.fully_trained_modules) & set(config.lora_target_modules)
    if overlap:
        raise UserError(f"modules {sorted(overlap)} are both LoRA targets and fully trained; pick one")
    token_rows = (chat_token_ids(tokenizer) if config.train_chat_token_rows else []) + list(new_rows)
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        modules_to_save=modules_to_save or None,
        trainable_token_indices={"embed_tokens": token_rows, "lm_head": token_rows} if token_rows else None,
        task_type="CAUSAL_LM",
    )


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def round_stochastically(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """fp32 → bf16, rounding up with probability equal to the dropped fraction: unbiased, so a delta far below
    bf16's spacing (2^-8 of the weight) survives on average instead of rounding back to the old weight."""
    bits = weight.float().contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=bits.device, generator=generator)
    return ((bits + noise) & -(1 << 16)).view(torch.float32).to(torch.bfloat16)


def merge_adapter(model: PeftModel, seed: int = 0) -> PreTrainedModel:
    """Fold LoRA into the base weights: sum in fp32, then round stochastically to bf16 (nearest for fp16,
    exact for fp32), one layer at a time so memory grows by one fp32 weight, not the whole model.

    The plain bf16 merge rounds each weight to nearest, which drops a systematic share of small deltas (at
    Llama-8B width, a delta of 0.2% of the weight's RMS keeps 81% of itself, and 0.1% keeps 52%);
    stochastic rounding keeps all of it on average, at the noise level of one more bf16 rounding
    (benchmarks/merge_precision.py; the README, "Merge precision").
    """
    generator = torch.Generator(next(model.parameters()).device).manual_seed(seed)  # reproducible merges
    for module in model.modules():
        if isinstance(module, LoraLayer) and not module.merged:
            weight = module.get_base_layer().weight
            dtype = weight.dtype
            weight.data = weight.data.float()
            module.merge()
            merged = weight.data
            weight.data = round_stochastically(merged, generator) if dtype == torch.bfloat16 else merged.to(dtype)
    with warnings.catch_warnings():  # LoRA layers are merged above; PEFT still merges norms and chat rows
        warnings.filterwarnings("ignore", "All adapters are already merged")
        return model.merge_and_unload()


def save_trained(model, tokenizer: PreTrainedTokenizerBase, out_dir: Path,
                 merge_check: Callable[[torch.nn.Module], float] | None = None, card: ModelCard | None = None) -> Path:
    """Save a standalone model (LoRA merged in) + tokenizer + `card` (omics_model.json) to `out_dir`; keep the
    adapter in `adapter/`.

    `merge_check(model)` (a loss on fixed batches) is called on the adapter model and on the merged model.
    Files are written to a staging folder first and moved in, config.json last: a kill while moving leaves
    no config.json, so nothing loads half a model, and the next save (--resume) replaces every file.
    """
    staging = out_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    if isinstance(model, PeftModel):
        model.save_pretrained(staging / "adapter")  # trained weights as trained (fp32 copies included)
        if merge_check is not None:
            merge_check(model)
        dtype = weights_dtype(model)
        model = merge_adapter(model).to(dtype)  # one dtype, the base's: the fp32 norms would be saved as F32
        if merge_check is not None:
            merge_check(model)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.chat_template:  # generation stops at the end of the assistant's turn
        model.generation_config.eos_token_id = [end_of_turn_id(tokenizer), tokenizer.eos_token_id]
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if card is not None:
        card.write(staging)
    for item in sorted(staging.iterdir(), key=lambda item: item.name == "config.json"):
        target = out_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        item.replace(target)
    staging.rmdir()
    return out_dir
