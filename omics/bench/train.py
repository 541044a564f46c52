"""`omics bench train`: real-token throughput, MFU and peak memory of a naive baseline and of our paths.

One process, one run, same model and data: the baseline is a hand-written loop doing what HF Trainer defaults
give for LoRA SFT (padded batches of whole examples, no packing, SDPA, logits over every position, every layer
checkpointed); ours is what `omics stageN train` runs: the stage's shipped config (configs/stageN.yaml) through
OmicsTrainer with its training arguments, PackedCollator and answer-only loss (Liger when installed), one
micro-batch per step. Random weights: speed does not depend on them.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
import time
from argparse import Namespace
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerBase, TrainerCallback

from omics.config import TrainConfig, load_config
from omics.data.packing import IGNORE, PackedCollator, pack
from omics.device import attention_implementation, describe, model_dtype, use_cuda
from omics.loss import answer_only_loss
from omics.model import load_model, load_tokenizer, prepare_for_training, save_trained
from omics.optim import make_optimizer
from omics.paths import default_config
from omics.tiny import save_llama3_tokenizer
from omics.train import OmicsTrainer, training_arguments, versions

SHAPES = {
    "8b": Path(__file__).resolve().parents[2] / "benchmarks" / "llama-3.1-8b.json",
    "tiny": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 16},
}
DATASHEET_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "L40S": 362.0, "A100": 312.0}  # dense, no sparsity


@dataclass
class Variant:
    """One measured training path: the baseline's hand-written loop, or (packed) ours through OmicsTrainer."""

    name: str
    stage: int
    packed: bool
    answer_only: bool
    config: TrainConfig


@dataclass
class Timed:
    """What a measured path did in its timed steps (the first step, a warm-up, left out)."""

    seconds: float
    batches: list[dict[str, torch.Tensor]]


def synthetic_examples(stage: int, count: int, max_length: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Token ids with the length profile of the real data (prompt masked for Stages 2-3).

    Stage 1: ~2,000-residue windows at ~1.8 residues/token, cut at max_length; Stage 2: Biology-Instructions
    questions, log-normal around ~300 tokens with short answers (~1.3B tokens / 3.3M examples);
    Stage 3: the same questions with ~150-400-token reasoning answers.
    """
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        if stage == 1:
            length, answer = min(max_length, int(rng.uniform(0.3, 1.0) * 1100)), None
        else:
            prompt = int(min(max_length * 0.8, rng.lognormvariate(math.log(260), 0.5)))
            answer = int(rng.uniform(15, 40) if stage == 2 else rng.uniform(150, 400))
            length = min(max_length, prompt + answer)
            answer = min(answer, length - 8)
        ids = [128000] + [rng.randrange(1000, 120000) for _ in range(length - 1)]
        labels = list(ids) if answer is None else [IGNORE] * (length - answer) + ids[length - answer:]
        examples.append((ids, labels))
    return examples


def padded_batches(examples, batch_size: int, pad_id: int):
    """The baseline's batches: whole examples padded to the longest of each batch."""
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad_id)
        labels = torch.full((len(chunk), width), IGNORE)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (ids, lab) in enumerate(chunk):
            input_ids[row, :len(ids)], labels[row, :len(ids)], mask[row, :len(ids)] = (
                torch.tensor(ids), torch.tensor(lab), 1)
        yield {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def packed_batches(examples, batch_size: int, block: int, pad_id: int):
    """Packed blocks collated as training does (one Trainer-free batch: --stage-paths)."""
    collate = PackedCollator(pad_id)
    blocks = list(pack(examples, block))
    for start in range(0, len(blocks), batch_size):
        yield collate(blocks[start:start + batch_size])


def model_flops_per_token(config, finetune: str, seq_len: float, head_fraction: float) -> float:
    """Dense matmul FLOPs each real token needs: 6N for full fine-tuning, ~4N for LoRA (no weight
    gradients), causal attention (12 · layers · hidden · seq/2), and the output projection only on the
    `head_fraction` of positions that carry a loss (1 for the baseline, which projects every position)."""
    body = config.num_hidden_layers * (
        2 * config.hidden_size * config.num_attention_heads * config.head_dim
        + 2 * config.hidden_size * config.num_key_value_heads * config.head_dim
        + 3 * config.hidden_size * config.intermediate_size)
    head = config.vocab_size * config.hidden_size * head_fraction
    attention = 12 * config.num_hidden_layers * config.hidden_size * seq_len / 2
    return (6 if finetune == "full" else 4) * body + 4 * head + attention


def matmul_peak_tflops(device: torch.device) -> float:
    """Measured bf16 (CPU: fp32) matmul throughput on this device, the honest MFU denominator."""
    size, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start, reps = time.perf_counter(), 20 if device.type == "cuda" else 5
    for _ in range(reps):
        a @ b
    sync()
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def naive_steps(model, path: Variant, examples, steps: int, pad_id: int, device: torch.device) -> Timed:
    """The baseline: a hand-written loop over padded batches, HF's own loss over every position."""
    optimizer = make_optimizer(model, path.config)
    batches = list(padded_batches(examples, path.config.micro_batch_size, pad_id))[: steps + 1]
    seconds = 0.0
    for step, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        start = time.perf_counter()
        model(**batch, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if step > 0:  # the first step warms up kernels and allocators
            seconds += time.perf_counter() - start
    return Timed(seconds, batches[1:])


class RecordingCollator(PackedCollator):
    """The training collator, keeping the batches it made (in the order the Trainer steps through them)."""

    def __init__(self, pad_token_id: int):
        super().__init__(pad_token_id)
        self.batches: list[dict[str, torch.Tensor]] = []

    def __call__(self, rows):
        self.batches.append(super().__call__(rows))
        return self.batches[-1]


class StepTimer(TrainerCallback):
    """Times each optimizer step as the Trainer runs it (forward, backward, optimizer, scheduler, logging hooks);
    keeps the Trainer from saving a checkpoint at the end (not part of a step; GBs at 8B)."""

    def __init__(self, device: torch.device):
        self.device, self.durations, self.start = device, [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        _sync(self.device)
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _sync(self.device)
        self.durations.append(time.perf_counter() - self.start)
        control.should_save = False


def trainer_steps(model, path: Variant, examples, steps: int, tokenizer: PreTrainedTokenizerBase,
                  device: torch.device) -> Timed:
    """Ours: the stage's config through OmicsTrainer, as `omics stageN train` runs it, for `steps` + 1 steps."""
    config = replace(path.config, max_steps=steps + 1)
    collator, timer = RecordingCollator(tokenizer.pad_token_id), StepTimer(device)
    with tempfile.TemporaryDirectory(prefix="omics-bench-") as checkpoints:
        trainer = OmicsTrainer(model=model, args=training_arguments(config, Path(checkpoints), has_eval=False),
                               train_dataset=list(pack(examples, config.max_length)), data_collator=collator,
                               processing_class=tokenizer, callbacks=[timer], train_config=config)
        trainer.train()
    return Timed(sum(timer.durations[1:]), collator.batches[1:len(timer.durations)])


def measure(model_config, path: Variant, examples, steps: int, tokenizer: PreTrainedTokenizerBase,
            device: torch.device) -> dict:
    cfg = path.config
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config, dtype=model_dtype(cfg.dtype),
                                             attn_implementation=cfg.attn_implementation).to(device)
    model = prepare_for_training(model, tokenizer, cfg)
    model.train()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    pad_id = tokenizer.pad_token_id
    timed = (trainer_steps(model, path, examples, steps, tokenizer, device) if path.packed
             else naive_steps(model, path, examples, steps, pad_id, device))
    real_tokens = sum(int((b["input_ids"] != pad_id).sum()) for b in timed.batches)
    loss_tokens = sum(int((b["labels"] != IGNORE).sum()) for b in timed.batches)
    padded = sum(b["input_ids"].numel() for b in timed.batches)
    seq_len = sum(b["input_ids"].shape[1] for b in timed.batches) / max(len(timed.batches), 1)
    result = {
        "path": path.name, "stage": path.stage, "packed": path.packed, "answer_only_loss": path.answer_only,
        "driver": "omics.train.OmicsTrainer" if path.packed else "hand-written loop",
        "attention": cfg.attn_implementation,
        "finetune": cfg.finetune, "micro_batch_size": cfg.micro_batch_size, "max_length": cfg.max_length,
        "checkpoint_every_n_layers": cfg.checkpoint_every_n_layers if cfg.gradient_checkpointing else None,
        "steps": len(timed.batches), "real_tokens": real_tokens, "seconds": round(timed.seconds, 3),
        "tokens_per_second": round(real_tokens / max(timed.seconds, 1e-9), 1),
        "padding_fraction": round(1 - real_tokens / max(padded, 1), 4),
        "flops_per_token": model_flops_per_token(model_config, cfg.finetune, seq_len,
                                                 loss_tokens / max(real_tokens, 1) if path.answer_only else 1.0),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
    }
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def variants(max_length: int, micro_batch: int, stage: int, attentions: list[str],
             dtype: str = "auto") -> list[Variant]:
    """The naive baseline and our path (once per attention implementation) for one stage, on its data: ours is the
    stage's shipped config at this length and micro-batch, one micro-batch per step as the baseline's."""
    ours = load_config(default_config(stage), [f"max_length={max_length}", f"micro_batch_size={micro_batch}",
                                               "grad_accum=1", f"dtype={dtype}"])
    # the stage's adapter shape for both: the comparison is the engineering
    baseline = TrainConfig(lora_r=ours.lora_r, lora_alpha=ours.lora_alpha, train_norms=False, max_length=max_length,
                           micro_batch_size=micro_batch, grad_accum=1, liger=False, attn_implementation="sdpa",
                           dtype=dtype)
    return [Variant(f"stage{stage} baseline: HF defaults (padded, full logits, LoRA)", stage, False, False, baseline)
            ] + [Variant(f"stage{stage} ours: configs/stage{stage}.yaml via OmicsTrainer ({ours.finetune}, {attn})",
                         stage, True, True, replace(ours, attn_implementation=attn)) for attn in attentions]


def largest_micro_batch(model_config, variant: Variant, stage: int, max_length: int, tokenizer, device) -> int:
    """Double the micro-batch until the step no longer fits (under --cap-gb): what fits an L40S."""
    fits, size = 0, 1
    while size <= 256:
        examples = synthetic_examples(stage, size * 8, max_length)
        try:
            measure(model_config, replace(variant, config=replace(variant.config, micro_batch_size=size)),
                    examples, 1, tokenizer, device)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        fits, size = size, size * 2
    return fits


def shape_config(shape: str, layers: int | None = None):
    """The model config of a benchmark shape (`layers`: that many decoder layers instead)."""
    spec = SHAPES[shape]
    config = (AutoConfig.from_pretrained(spec) if isinstance(spec, Path)
              else AutoConfig.for_model("llama", vocab_size=128256, **spec))
    if layers:
        config.num_hidden_layers = layers
    return config


def batch_loss(model, batch: dict[str, torch.Tensor]) -> float:
    """The loss on `batch` in eval mode, without gradients."""
    model.eval()
    with torch.no_grad():
        loss = float(answer_only_loss(model, batch))
    model.train()
    return loss


def check_stage_path(model_config, stage: int, args: Namespace, tokenizer, work: Path) -> dict:
    """One training step of a stage's shipped config (configs/stageN.yaml, with --max-length, --micro-batch-size
    and --dtype), then save (LoRA merged in), reload, and the loss of the reloaded model on the same batch."""
    overrides = [f"max_length={args.max_length}", f"micro_batch_size={args.micro_batch_size}", f"dtype={args.dtype}"]
    config = load_config(default_config(stage), overrides)
    device = torch.device("cuda" if use_cuda() else "cpu")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config, dtype=model_dtype(config.dtype),
                                             attn_implementation=attention_implementation("sdpa")).to(device)
    model = prepare_for_training(model, tokenizer, config)
    optimizer = make_optimizer(model, config)
    examples = synthetic_examples(stage, args.micro_batch_size * args.max_length // 40 + 8, args.max_length)
    batch = {k: v.to(device) for k, v in next(packed_batches(examples, config.micro_batch_size, config.max_length,
                                                             tokenizer.pad_token_id)).items()}
    timer = time.perf_counter()
    loss = answer_only_loss(model, batch, fused=config.liger)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    step_seconds = time.perf_counter() - timer
    trained = batch_loss(model, batch)
    timer = time.perf_counter()
    save_trained(model, tokenizer, work / f"stage{stage}")
    save_seconds = time.perf_counter() - timer
    del model, optimizer
    timer = time.perf_counter()
    reloaded = load_model(work / f"stage{stage}", "sdpa", config.dtype)
    reload_seconds = time.perf_counter() - timer
    merged = batch_loss(reloaded, batch)
    return {"stage": stage, "config": f"configs/stage{stage}.yaml", "finetune": config.finetune,
            "optimizer": config.optimizer + (" in backward" if config.optimizer_in_backward else ""),
            "dtype": str(model_dtype(config.dtype)).removeprefix("torch."), "tokens": int(batch["input_ids"].numel()),
            "loss_first_step": round(float(loss.detach()), 5), "loss_after_step": round(trained, 5),
            "loss_reloaded_merged": round(merged, 5), "merged_minus_trained": round(merged - trained, 6),
            "step_seconds": round(step_seconds, 2), "save_merge_seconds": round(save_seconds, 2),
            "reload_seconds": round(reload_seconds, 2),
            "saved_gib": round(sum(f.stat().st_size for f in (work / f"stage{stage}").rglob("*")) / 2**30, 3)}


def stage_tokenizer(work: Path, stage: int) -> PreTrainedTokenizerBase:
    """The Llama-3 tokenizer as a stage trains with it (the chat template from Stage 2 on), saved once in `work`."""
    if not (work / "tokenizer").is_dir():
        save_llama3_tokenizer(work / "tokenizer")
    return load_tokenizer(work / "tokenizer", chat=stage > 1)


def run_stage_paths(args: Namespace) -> dict:
    """`--stage-paths`: each stage's shipped training path at the chosen shape, end to end through save/reload."""
    model_config = shape_config(args.shape, args.layers)
    with tempfile.TemporaryDirectory(prefix="omics-bench-") as work:
        results = []
        for stage in args.stages:
            results.append(check_stage_path(model_config, stage, args, stage_tokenizer(Path(work), stage), Path(work)))
            print(json.dumps(results[-1]), flush=True)
            shutil.rmtree(Path(work) / f"stage{stage}")
    doc = {"benchmark": "train --stage-paths", "shape": args.shape, "layers": model_config.num_hidden_layers,
           "widths": {k: getattr(model_config, k) for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                                            "num_key_value_heads", "vocab_size")},
           "device": describe(), "versions": versions(), "settings": vars(args) | {"out": str(args.out)},
           "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=str))
    return doc


def measure_stage(model_config, stage: int, args: Namespace, tokenizer, device, peak: float,
                  datasheet: float | None) -> list[dict]:
    """The baseline, then our path once per --attn, on one stage's synthetic data; each row printed as measured."""
    examples = synthetic_examples(stage, args.examples, args.max_length)
    measured = variants(args.max_length, args.micro_batch_size, stage, args.attn, args.dtype)
    results: list[dict] = []
    for variant in measured:
        try:
            result = measure(model_config, variant, examples, args.steps, tokenizer, device)
        except torch.OutOfMemoryError:
            result = {"path": variant.name, "stage": stage, "error": "out of memory"}
            torch.cuda.empty_cache()
        except Exception as err:  # e.g. an attention implementation this device or version lacks
            result = {"path": variant.name, "stage": stage, "error": f"{type(err).__name__}: {err}"[:200]}
        if "tokens_per_second" in result:
            achieved = result["tokens_per_second"] * result["flops_per_token"] / 1e12
            result["mfu_measured_peak"] = round(achieved / peak, 4)
            result["mfu_datasheet"] = round(achieved / datasheet, 4) if datasheet else None
        baseline = (results + [result])[0]
        if variant.packed and "tokens_per_second" in baseline and "tokens_per_second" in result:
            result["speedup_vs_baseline"] = round(result["tokens_per_second"] / baseline["tokens_per_second"], 2)
        if variant.packed and args.find_max_batch and device.type == "cuda" and "error" not in result:
            result["largest_micro_batch"] = largest_micro_batch(model_config, variant, stage, args.max_length,
                                                                tokenizer, device)
        results.append(result)
        print(json.dumps(result), flush=True)
    return results


def run(args: Namespace) -> dict:
    if args.stage_paths:
        return run_stage_paths(args)
    device = torch.device("cuda" if use_cuda() else "cpu")
    model_config = shape_config(args.shape, args.layers)
    if args.cap_gb and device.type == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gb * 2**30 / total))
    peak = matmul_peak_tflops(device)
    device_name = describe()["device"]
    datasheet = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in str(device_name)), None)
    results = []
    with tempfile.TemporaryDirectory(prefix="omics-bench-") as work:
        for stage in args.stages:
            results += measure_stage(model_config, stage, args, stage_tokenizer(Path(work), stage), device, peak,
                                     datasheet)
    doc = {"benchmark": "train", "shape": args.shape, "device": describe(), "versions": versions(),
           "matmul_peak_tflops": round(peak, 2), "datasheet_tflops": datasheet, "memory_cap_gb": args.cap_gb,
           "settings": vars(args) | {"out": str(args.out)}, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=str))
    print(format_results(results))
    return doc


def format_results(results: list[dict]) -> str:
    lines = ["| path | tokens/s | × baseline | MFU (measured peak) | MFU (datasheet) | padding | peak GiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['path']} | {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['path']} | {r['tokens_per_second']:,.0f} | {r.get('speedup_vs_baseline', 1.0):.2f} | "
                     f"{r['mfu_measured_peak']:.1%} | "
                     f"{'—' if r['mfu_datasheet'] is None else format(r['mfu_datasheet'], '.1%')} | "
                     f"{r['padding_fraction']:.1%} | {r['peak_memory_gib'] or '—'} |")
    return "\n".join(lines)
