"""Typed training configuration: a stage's YAML file, then `--set key=value` overrides, saved resolved."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omics.device import DTYPES
from omics.errors import UserError

SYSTEM_PROMPT = (
    "You are a knowledgeable and helpful biology assistant. Please answer my biology sequence-related "
    "questions clearly and concisely. For regression tasks, please return a number."
)
# Stage 3's reasoning examples are asked with this prompt, its replayed Stage 2 examples with SYSTEM_PROMPT:
# the same questions under the same prompt would leave the model no way to know when to reason.
REASONING_PROMPT = (
    SYSTEM_PROMPT + " Think step by step: reply as <reasoning>your reasoning</reasoning> <answer>your answer</answer>."
)


@dataclass
class TrainConfig:
    """Every knob of a training run. Defaults are neutral; each stage's YAML states its choices and why."""

    # what is trained
    finetune: str = "lora"  # "lora" or "full"
    lora_r: int = 64
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    fully_trained_modules: list[str] = field(default_factory=list)  # trained in full next to LoRA, saved
    train_norms: bool = True  # RMSNorm weights trained (and saved) next to LoRA, as in the paper
    train_chat_token_rows: bool = False  # train the chat-token embedding rows (Stage 2's new format)
    train_embeddings: bool = False  # full fine-tuning: also train the input embeddings and output head
    loraplus_lr_ratio: float = 16.0  # LoRA+: B matrices learn this many times faster than A
    # data
    max_length: int = 1024  # tokens per packed block (Stage 1) / per example (Stages 2-3)
    wrap_tags: bool = False  # Stage 1: wrap each sequence as <dna>…<dna>
    task_prefix_fraction: float = 0.0  # Stages 2-3: share of questions prefixed "[Regression: task]"
    system_prompt: str = SYSTEM_PROMPT
    reasoning_system_prompt: str = REASONING_PROMPT  # Stage 3: asks for <reasoning>…</reasoning> <answer>…</answer>
    on_bad_line: str = "skip"  # "skip" (report and go on) or "stop" (report and stop)
    replay_ratio: float = 1.0  # Stage 3: replayed Stage 2 examples per reasoning example
    on_bad_reasoning: str = "skip"  # Stage 3 outputs without <reasoning>…</reasoning> <answer>…</answer>:
    # "skip" (report, drop), "keep" (report, train on them), "stop" (refuse the file)
    dpo_beta: float = 0.1  # DPO: how far the policy may move from the reference (higher: closer to it)
    num_generations: int = 8  # GRPO: answers sampled per question, the group their rewards are compared within
    max_completion_length: int = 0  # GRPO: tokens per answer; 0: by the base's format (256 reasoning, 64 direct)
    temperature: float = 1.0  # GRPO: sampling temperature of the answers
    grpo_beta: float = 0.04  # GRPO: weight of the KL to the reference (the adapter disabled); 0: no reference
    format_reward_weight: float = 0.5  # GRPO, reasoning base: the format reward's weight next to correctness (1)
    vllm_memory_share: float = 0.45  # GRPO with vLLM installed: the share of the GPU its colocated engine takes
    # optimisation
    learning_rate: float = 1e-4
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of the peak
    warmup_ratio: float = 0.03
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    micro_batch_size: int = 4
    grad_accum: int = 8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optimizer: str = "adamw"  # "adamw", "adamw_8bit" (torchao; bf16 stochastic rounding), "adafactor"
    optimizer_in_backward: bool = False  # update each weight as its gradient lands: no full gradient buffer
    gradient_checkpointing: bool = True
    checkpoint_every_n_layers: int = 1  # >1 keeps layers between checkpoints un-checkpointed (faster)
    liger: bool = True  # Liger kernels (fused linear cross-entropy, RMSNorm, SwiGLU, RoPE) when installed
    attn_implementation: str = "auto"  # "auto" picks flash_attention_2 if installed, else sdpa
    torch_compile: bool = False
    dtype: str = "auto"  # weights: "auto" (bf16 on GPUs that have it, else fp16; fp32 on CPU), "bf16", "fp16", "fp32"
    seed: int = 42
    # bookkeeping
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 3
    keep_checkpoints: bool = True  # false: delete checkpoints/ once the model is saved (nothing left to resume)
    eval_steps: int = 500
    eval_generation_samples: int = 64  # Stages 2-3: examples generated at each periodic evaluation
    best_model_metric: str = "mixed_score"  # with --eval-data, the checkpoint kept as the model: the best
    # validation "mixed_score" (Stages 2-3, generated answers), the lowest eval "loss", or the "last" step's
    eval_max_samples: int = 1000  # Stages 2-3: --eval-data examples (stratified by task) for the eval loss and
    # the generation check; 0 = the whole file

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(name: str, declared: str, value: Any) -> Any:
    """Check a value against the field's declared type; ints may be written as 1e3, floats as 1e-4."""
    number = isinstance(value, int | float | str) and not isinstance(value, bool)
    try:
        if declared == "float" and number:
            return float(value)
        if declared == "int" and number and float(value).is_integer():
            return int(float(value))
    except ValueError:
        pass
    if declared == "bool" and isinstance(value, bool):
        return value
    if declared == "str" and isinstance(value, str):
        return value
    if declared.startswith("list") and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise UserError(f"config key {name!r} expects {declared}, got {value!r}")


def _parse_override(item: str, declared: dict[str, str]) -> tuple[str, Any]:
    if "=" not in item:
        raise UserError(f"--set expects key=value, got {item!r}")
    key, raw = (part.strip() for part in item.split("=", 1))
    # text keys take the text as written ("Answer: yes" stays a string); others are read as YAML
    return key, raw if declared.get(key) == "str" else yaml.safe_load(raw)


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config and apply `key=value` overrides (values parsed as YAML: 1e-4, true, [a, b])."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} not found")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of key: value, got {type(values).__name__}")
    declared = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    overridden = dict(_parse_override(item, declared) for item in overrides or [])
    for source, keys in ((str(path), values), ("--set", overridden)):
        if unknown := sorted(set(keys) - set(declared)):
            raise UserError(f"{source}: unknown config keys {unknown}; valid keys: {sorted(declared)}")
    values.update(overridden)
    config = TrainConfig(**{k: _coerce(k, declared[k], v) for k, v in values.items()})
    choices = {"finetune": ("lora", "full"), "on_bad_line": ("skip", "stop"),
               "on_bad_reasoning": ("skip", "keep", "stop"), "optimizer": ("adamw", "adamw_8bit", "adafactor"),
               "dtype": DTYPES, "best_model_metric": ("mixed_score", "loss", "last")}
    for key, allowed in choices.items():
        if getattr(config, key) not in allowed:
            raise UserError(f"config key {key!r} must be one of {allowed}, got {getattr(config, key)!r}")
    if not 0 <= config.warmup_ratio < 1:
        raise UserError(f"warmup_ratio is a fraction of the steps in [0, 1), got {config.warmup_ratio}")
    if config.optimizer_in_backward and config.grad_accum != 1:
        raise UserError("optimizer_in_backward applies each update during backward: set grad_accum=1 "
                         "(raise micro_batch_size instead)")
    return config
