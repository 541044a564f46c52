"""`omics stageN train --dry-run [N]`: what a run would train on and what it would cost, without training.

Every figure comes from the code the real run uses: the stage's examples and the data pipeline's shortening,
the packed blocks (one tokenisation pass, cached as a real run caches it, so the run that follows reads them),
the trainer's collator for the loss marks, HF's step count, and `omics bench memory`'s traced training step
on the base model's config.json (fake tensors: no weight is read). Nothing is created, locked or written in
--output-dir/--metrics-dir, so a dry run works beside any previous run.
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import groupby, islice
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset
from torch._subclasses.fake_tensor import FakeTensorMode
from transformers import AutoConfig, PreTrainedTokenizerBase

from omics.bench.memory import build, trace_step
from omics.config import TrainConfig, load_config
from omics.data.packing import IGNORE, PackedCollator, pack
from omics.data.validate import DataReport
from omics.device import model_dtype
from omics.model import load_tokenizer, require_model_dir
from omics.stages import ExampleBuilder, Stage
from omics.train import RunArgs, build_dataset, check_precision, check_schedule, choose_max_length

log = logging.getLogger("omics")
UNSHORTENED = 10**9  # a max_length nothing exceeds: the example as it was before shortening
LOSS_COLOUR, RESET = "\033[1;32m", "\033[0m"
HISTOGRAM_BINS, BAR_WIDTH = 8, 40


@dataclass
class Preview:
    """One example as the trainer sees it: its tokens, which of them carry loss, and what shortening did."""

    input_ids: list[int]
    loss: list[bool]  # the trainer collator's labels != -100
    shortened: list[str]  # the data report's notes this example added
    cuts: dict[str, str]  # "prompt"/"answer" → how many tokens were removed, and from where


def dry_run(stage: Stage, args: RunArgs) -> dict[str, Any]:
    """Print a few examples as trained, the data's lengths and packing, the steps, trainable parameters and
    memory; return the figures. Reads the base model's tokenizer and config.json only."""
    config = load_config(args.config, args.overrides)
    check_precision(config)
    check_schedule(stage, config, args.eval_data is not None)
    base = require_model_dir(args.base_model, stage.missing_base_hint)
    tokenizer = load_tokenizer(base, chat=stage.chat)
    print(f"dry run of {stage.name} train: nothing is trained, nothing written into {args.output_dir} "
          f"or {args.metrics_dir}")
    if config.max_length == 0:
        config.max_length = choose_max_length(stage, args, tokenizer, config)
    previews = list(preview_examples(stage, args, tokenizer, config))
    colour = sys.stdout.isatty()
    legend = "loss-bearing tokens in green" if colour else "loss-bearing tokens in [[...]]"
    print(f"\n== the first {len(previews)} examples as the model sees them ({legend}) ==")
    for number, preview in enumerate(previews, 1):
        print(describe_preview(number, preview, stage.chat))
        print(render(tokenizer, preview, colour))
    print("\n== the whole file: one tokenisation pass, unless cached (cached for the real run) ==", flush=True)
    tokenised = [0]
    blocks, _ = build_dataset(replace(stage, examples=counted(stage.examples, tokenised)), args.data, tokenizer,
                              config, args.extra_data, args.cache_dir)
    print(f"tokenised {tokenised[0]:,} examples" if tokenised[0] else "read from the cache (no tokenisation)")
    lengths = pc.list_flatten(blocks.data.column("lengths")).to_numpy()
    figures = {"previews": previews, **packing(blocks, config)}
    print(histogram(lengths, config.max_length))
    figures |= schedule(config, figures["blocks"], figures["real_tokens"])
    print(describe_schedule(figures, config))
    model_config = AutoConfig.from_pretrained(base)
    log.info("tracing one training step on fake tensors at %s's shape (~2 min a stage at 8B on 2 cores)", base)
    with warnings.catch_warnings():  # library notices about fake tensors and deprecated names: no news here
        warnings.simplefilter("ignore")
        figures["parameters"] = trainable_parameters(model_config, config, tokenizer)
        figures["memory"] = trace_step(model_config, config, stage.number, tokenizer)
    print(describe_parameters(figures["parameters"], config))
    print(describe_memory(figures["memory"], config, stage.number))
    return figures


def preview_examples(stage: Stage, args: RunArgs, tokenizer: PreTrainedTokenizerBase, config: TrainConfig
                     ) -> Iterator[Preview]:
    """The first `args.dry_run` examples of the file, streamed: each as packed and collated for the trainer, and
    for a shortened one, what was cut (against the same example unshortened, from a second stream opened then)."""
    report, meta = DataReport(str(args.data)), {"extra": {k: str(v) for k, v in args.extra_data.items()}}
    fitted = stage.examples(args.data, tokenizer, config, report, meta)
    whole, read = None, 0  # the unshortened stream, and how many of its examples were read
    collate = PackedCollator(tokenizer.pad_token_id)
    try:
        for index in range(args.dry_run):
            notes = Counter(report.notes)
            if (example := next(fitted, None)) is None:
                return
            labels = collate([next(pack([example], len(example[0])))])["labels"][0]
            shortened, cuts = sorted(report.notes - notes), {}
            if shortened and stage.chat:  # Stage 1 cuts sequences into windows, it never shortens
                whole = whole or stage.examples(args.data, tokenizer, replace(config, max_length=UNSHORTENED),
                                                 DataReport(str(args.data)), dict(meta))
                cuts, read = shortening(next(islice(whole, index - read, None)), example), index + 1
            yield Preview(example[0], (labels != IGNORE).tolist(), shortened, cuts)
    finally:
        fitted.close()
        if whole is not None:
            whole.close()


def shortening(before: tuple[list[int], list[int]], after: tuple[list[int], list[int]]) -> dict[str, str]:
    """Per part (prompt: no loss, answer: loss) that lost tokens: how many, and the first token that differs."""
    cuts = {}
    for part, in_part in (("prompt", lambda label: label == IGNORE), ("answer", lambda label: label != IGNORE)):
        old, new = ([i for i, label in zip(*ex, strict=True) if in_part(label)] for ex in (before, after))
        if len(old) != len(new):
            start = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), len(new))
            cuts[part] = f"{len(old):,} → {len(new):,} tokens ({len(old) - len(new):,} cut from token {start:,} on)"
    return cuts


def counted(examples: ExampleBuilder, count: list[int]) -> ExampleBuilder:
    """The stage's examples, counted into `count[0]`: a cached dataset is never tokenised (the count stays 0)."""

    def build(*builder_args) -> Iterator:
        for example in examples(*builder_args):
            count[0] += 1
            yield example

    return build


def describe_preview(number: int, preview: Preview, chat: bool) -> str:
    loss = sum(preview.loss)
    parts = (f"prompt {len(preview.loss) - loss:,} (no loss), answer {loss:,} (loss)" if chat
             else f"{loss:,} with loss, {len(preview.loss) - loss:,} without (BOS: nothing before it predicts it)")
    text = f"\n-- example {number}: {len(preview.input_ids):,} tokens: {parts}"
    for note in preview.shortened:
        text += f"\n   {note}"
    for part, cut in preview.cuts.items():
        text += f"\n   {part}: {cut}"
    return text


def render(tokenizer: PreTrainedTokenizerBase, preview: Preview, colour: bool) -> str:
    """The decoded tokens, special ones included, with each run of loss-bearing tokens marked."""
    parts = []
    for marked, run in groupby(zip(preview.input_ids, preview.loss, strict=True), key=lambda pair: pair[1]):
        text = tokenizer.decode([token for token, _ in run], clean_up_tokenization_spaces=False)
        parts.append((f"{LOSS_COLOUR}{text}{RESET}" if colour else f"[[{text}]]") if marked else text)
    return "".join(parts)


def packing(blocks: Dataset, config: TrainConfig) -> dict[str, Any]:
    real = int(pc.sum(pc.list_value_length(blocks.data.column("input_ids"))).as_py())
    return {"blocks": len(blocks), "real_tokens": real,
            "packing_efficiency": real / (len(blocks) * config.max_length) if len(blocks) else 0.0}


def histogram(lengths: np.ndarray, max_length: int) -> str:
    """Examples per token-length bin (after shortening), as text bars."""
    width = math.ceil(max_length / HISTOGRAM_BINS)
    counts = np.bincount(np.minimum((lengths - 1) // width, HISTOGRAM_BINS - 1), minlength=HISTOGRAM_BINS)
    most = max(counts.max(initial=0), 1)
    rows = [f"\ntoken lengths of the {len(lengths):,} examples (after shortening; max_length {max_length:,}):"]
    for b in range(HISTOGRAM_BINS):
        bar = "█" * math.ceil(BAR_WIDTH * counts[b] / most)
        rows.append(f"  {b * width + 1:>6,}–{min((b + 1) * width, max_length):<6,} {bar:<{BAR_WIDTH}} {counts[b]:,}")
    return "\n".join(rows)


def schedule(config: TrainConfig, blocks: int, real_tokens: int) -> dict[str, Any]:
    """Optimizer steps and tokens as HF's Trainer counts them: ceil(blocks / micro_batch) micro-batches an epoch,
    ceil(those / grad_accum) steps (the last one shorter), max_steps if > 0 else ceil(epochs × steps an epoch);
    tokens are exact when whole epochs are trained, else the share of an epoch's tokens the steps consume."""
    micro_batches = max(1, math.ceil(blocks / config.micro_batch_size))
    per_epoch = max(1, math.ceil(micro_batches / config.grad_accum))
    steps = config.max_steps if config.max_steps > 0 else math.ceil(config.epochs * per_epoch)
    epochs, rest = divmod(steps, per_epoch)
    consumed = epochs * micro_batches + min(rest * config.grad_accum, micro_batches)
    return {"steps": steps, "steps_per_epoch": per_epoch, "micro_batches_per_epoch": micro_batches,
            "tokens": round(real_tokens * consumed / micro_batches), "tokens_exact": consumed % micro_batches == 0}


def describe_schedule(figures: dict[str, Any], config: TrainConfig) -> str:
    steps = f"max_steps {config.max_steps:,}" if config.max_steps > 0 else f"epochs {config.epochs:g}"
    return (f"\npacking: {figures['blocks']:,} blocks of {config.max_length:,} tokens hold {figures['real_tokens']:,} "
            f"real tokens: {figures['packing_efficiency']:.1%} efficiency\n"
            f"schedule: {figures['steps']:,} optimizer steps ({steps}; {figures['steps_per_epoch']:,} steps an epoch = "
            f"{figures['micro_batches_per_epoch']:,} micro-batches of {config.micro_batch_size} blocks / grad_accum "
            f"{config.grad_accum}), {'' if figures['tokens_exact'] else '≈ '}{figures['tokens']:,} tokens trained")


def parameter_kind(name: str) -> str:
    for marker, kind in (("lora_", "LoRA adapters"), ("trainable_tokens", "chat-token rows"), ("norm", "RMSNorms"),
                         ("embed_tokens", "embeddings"), ("lm_head", "output head")):
        if marker in name:
            return kind
    return "decoder weights"


def trainable_parameters(model_config, config: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Trained parameters by kind, from the real `prepare_for_training` on a model of fake tensors (no weights)."""
    model = build(model_config, config, tokenizer, FakeTensorMode())
    kinds: Counter = Counter()
    for name, param in model.named_parameters():
        kinds[parameter_kind(name) if param.requires_grad else "frozen"] += param.numel()
    return dict(kinds)


def describe_parameters(kinds: dict[str, int], config: TrainConfig) -> str:
    trained = {kind: n for kind, n in kinds.items() if kind != "frozen"}
    total = sum(kinds.values())
    parts = ", ".join(f"{kind} {n:,}" for kind, n in sorted(trained.items(), key=lambda item: -item[1]))
    return (f"\ntrainable parameters ({config.finetune}): {sum(trained.values()):,} of {total:,} "
            f"({sum(trained.values()) / total:.2%}): {parts}")


def describe_memory(memory: dict[str, Any], config: TrainConfig, stage: int) -> str:
    computed = " (computed)" if "optimizer_gib" in memory["computed"] else ""
    return (f"memory: peak {memory['peak_gib']:.2f} GiB in one training step = weights {memory['weights_gib']:.2f} "
            f"+ gradients {memory['gradients_gib']:.2f} + optimizer {memory['optimizer_gib']:.2f}{computed} "
            f"+ activations {memory['activations_gib']:.2f} (of which loss {memory['loss_gib']:.2f})\n"
            f"  traced on fake tensors (omics bench memory): {str(model_dtype(config.dtype)).removeprefix('torch.')}, "
            f"{config.micro_batch_size} × {config.max_length:,} tokens of Stage {stage}'s synthetic length profile, "
            "CPU kernels (no Liger); the CUDA context and fragmentation (~1-2 GiB) come on top")
