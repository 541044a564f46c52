"""`omics bench memory`: the peak GPU memory of one training step of each stage, traced without a GPU.

The step is the real one (`prepare_for_training`, `make_optimizer`, `answer_only_loss`, backward, optimizer
step, on the stage's default config and a packed batch from the real collator), run on fake tensors (shapes and
dtypes, no data) under PyTorch's `MemTracker`, which counts every allocation and free the step makes. The batch
is a fake tensor that keeps its real values, so what depends on the data (the labelled positions, the packed
mask) has its true size. An untraced step comes first, so optimizer states exist as in every later step.
A matmul mixing precisions raises here as on the GPU (fake kernels would silently promote).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from argparse import Namespace
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import torch
import torch._subclasses.fake_tensor as fake_tensor
from torch._C._profiler import _EventType
from torch.distributed._tools.mem_tracker import MemTracker
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.hooks import RemovableHandle
from transformers import AutoModelForCausalLM, PretrainedConfig
from transformers.initialization import no_init_weights

from omics import paths
from omics.bench.train import packed_batches, shape_config, synthetic_examples
from omics.config import TrainConfig, load_config
from omics.device import model_dtype
from omics.loss import answer_only_loss
from omics.model import load_tokenizer, prepare_for_training
from omics.optim import make_optimizer
from omics.tiny import save_llama3_tokenizer
from omics.train import versions

GIB = 2**30
MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
           torch.ops.aten.baddbmm.default}


class GpuRules(TorchDispatchMode):
    """What fake tensors on CPU would let pass and the GPU would not: a matmul mixing precisions raises (fake
    kernels silently promote). Scalars read from fake tensors (the in-backward optimizer's logged gradient
    norm) have no value: they read as 0."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in MATMULS:
            dtypes = {str(a.dtype) for a in args if isinstance(a, torch.Tensor)}
            if len(dtypes) > 1:
                raise RuntimeError(f"{func}: expected both operands to have the same dtype, got {sorted(dtypes)}")
        if (func is torch.ops.aten._local_scalar_dense.default and isinstance(args[0], fake_tensor.FakeTensor)
                and args[0].constant is None):
            return 0
        return func(*args, **(kwargs or {}))


class StepTracker(MemTracker):
    """MemTracker that also knows frozen weights (it would hook every parameter's gradient, which a frozen
    weight cannot take) and keeps a timeline of the total after each op, marked when outside every module."""

    def __init__(self) -> None:
        super().__init__()
        self.timeline: list[tuple[bool, int]] = []

    def _track_module_params_and_buffers(self, module, install_grad_hooks: bool = True):
        for param in module.parameters():
            if not param.requires_grad:  # an empty pair of handles: nothing to hook, nothing to remove
                self._param_to_grad_hook_handles.setdefault(param, (RemovableHandle(OrderedDict()),
                                                                    RemovableHandle(OrderedDict())))
        return super()._track_module_params_and_buffers(module, install_grad_hooks)

    def _update_peak_stats(self, peak_state) -> None:  # the step's peak only: per-module peaks cost O(modules) an op
        for device, snapshot in self._curr_mem_snap.items():
            if self._peak_mem.get(device, 0) < snapshot["Total"]:
                self._peak_mem[device], self._peak_mem_snap[device] = snapshot["Total"], dict(snapshot)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        total = sum(snap["Total"] for snap in self._curr_mem_snap.values())
        self.timeline.append((set(self._mod_tracker.parents) == {"Global"}, total))
        return out


@contextlib.contextmanager
def fake_build(dtype: torch.dtype, mode: fake_tensor.FakeTensorMode) -> Iterator[None]:
    """Build and prepare a model on fake tensors: no weight initialisation (random ops need real storage), the
    default dtype set (a built fake model cannot be `.to()`-converted: its parameters cannot be swapped, so a
    conversion keeps the parameter and replaces its data), and deep copies (PEFT's modules_to_save) in the
    same fake mode."""
    swap, default = torch.utils.swap_tensors, torch.get_default_dtype()

    def replace_data(param: torch.Tensor, new: torch.Tensor) -> None:
        param.data = new.data

    torch.utils.swap_tensors = replace_data
    torch.set_default_dtype(dtype)
    try:
        with mode, no_init_weights(), fake_tensor.FakeCopyMode(mode):
            yield
    finally:
        torch.utils.swap_tensors = swap
        torch.set_default_dtype(default)


@contextlib.contextmanager
def data_as_constants() -> Iterator[None]:
    """Let fake tensors derived from the batch keep real values (positions, masks, label indices: small)."""
    limit = fake_tensor.CONSTANT_NUMEL_LIMIT
    fake_tensor.CONSTANT_NUMEL_LIMIT = 2**31
    try:
        yield
    finally:
        fake_tensor.CONSTANT_NUMEL_LIMIT = limit


def stage_batch(stage: int, config: TrainConfig) -> dict[str, torch.Tensor]:
    """One micro-batch of packed blocks with the stage's length profile, through the real collator."""
    examples = synthetic_examples(stage, config.micro_batch_size * config.max_length // 100 + 8, config.max_length)
    return next(packed_batches(examples, config.micro_batch_size, config.max_length, pad_id=128004))


def quantised_states(model: torch.nn.Module, config: TrainConfig) -> int | None:
    """Bytes of a quantised optimizer's state, which fake tensors cannot run (torchao's step is compiled):
    8-bit AdamW keeps two uint8 states per trained weight plus one fp32 scale per 256-value block of each."""
    if config.optimizer != "adamw_8bit":
        return None
    return sum(2 * (p.numel() + 4 * -(-p.numel() // 256)) for p in model.parameters() if p.requires_grad)


def build(model_config: PretrainedConfig, config: TrainConfig, tokenizer, mode) -> torch.nn.Module:
    dtype = model_dtype(config.dtype)
    with fake_build(dtype, mode) if mode else contextlib.nullcontext():
        model = AutoModelForCausalLM.from_config(model_config, dtype=dtype, attn_implementation="sdpa")
        model = prepare_for_training(model, tokenizer, config)
    return model.train()


def training_step(model, optimizer, batch: dict[str, torch.Tensor], config: TrainConfig) -> None:
    answer_only_loss(model, batch, fused=config.liger).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def trace_step(model_config: PretrainedConfig, config: TrainConfig, stage: int, tokenizer) -> dict:
    """Peak memory of one training step and its parts, traced on fake tensors.

    A quantised optimizer's update is replaced by a stateless SGD update (same hooks, same gradient lifetimes)
    and its states are computed; a first, untraced step creates the states every later step holds."""
    mode, real_batch = fake_tensor.FakeTensorMode(), stage_batch(stage, config)
    model = build(model_config, config, tokenizer, mode)
    with mode, data_as_constants(), GpuRules():
        batch = {k: mode.fake_tensor_converter.from_real_tensor(mode, v, make_constant=True)
                 for k, v in real_batch.items()}
        computed = quantised_states(model, config)
        stateless = (lambda groups: torch.optim.SGD(groups, lr=config.learning_rate)) if computed else None
        optimizer = make_optimizer(model, config, stateless)
        training_step(model, optimizer, batch, config)
        tracker = StepTracker()
        tracker.track_external(model, optimizer, *batch.values())
        start = sum(snap["Total"] for snap in tracker.get_tracker_snapshot().values())
        with tracker:
            training_step(model, optimizer, batch, config)
    return summarise(tracker, model, computed) | {"step_increase_gib": round(
        (sum(snap["Total"] for snap in tracker.get_tracker_snapshot("peak").values()) - start) / GIB, 4)}


def measure_step(model_config: PretrainedConfig, config: TrainConfig, stage: int, tokenizer) -> float:
    """The same step on real tensors (CPU): the most its allocations add to what the step starts with, from the
    allocator's own counts (PyTorch profiler, profile_memory), independent of the tracer. GiB."""
    model = build(model_config, config, tokenizer, None)
    batch = stage_batch(stage, config)
    optimizer = make_optimizer(model, config)
    training_step(model, optimizer, batch, config)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        training_step(model, optimizer, batch, config)
    totals, nodes = [0], list(prof.profiler.kineto_results.experimental_event_tree())
    while nodes:
        node = nodes.pop()
        nodes.extend(node.children)
        if node.tag == _EventType.Allocation:
            totals.append(node.extra_fields.total_allocated)  # bytes allocated since profiling started
    return max(totals) / GIB


def summarise(tracker: StepTracker, model: torch.nn.Module, computed_optimizer: int | None) -> dict:
    """The peak and its parts. `loss` is the most the loss's own working set (logit slices, their fp32 copy,
    their gradients) adds on top of what the decoder's forward left: part of `activations` when the peak falls
    inside the loss."""
    peak = {k: sum(snap[k] for snap in tracker.get_tracker_snapshot("peak").values())
            for k in ("Parameter", "Buffer", "Gradient", "Activation", "Temp", "Optstate", "Other", "Total")}
    first_inside = next(i for i, (out, _) in enumerate(tracker.timeline) if not out)
    outside = [i for i, (out, _) in enumerate(tracker.timeline) if out and i > first_inside]
    loss_start = tracker.timeline[outside[0] - 1][1]
    optimizer = computed_optimizer if computed_optimizer is not None else peak["Optstate"]
    parts = {
        "weights_gib": peak["Parameter"] + peak["Buffer"],
        "gradients_gib": peak["Gradient"],
        "optimizer_gib": optimizer,
        "activations_gib": peak["Activation"] + peak["Temp"],
        "batch_gib": peak["Other"],
    }
    return {
        "peak_gib": round(sum(parts.values()) / GIB, 3),
        **{k: round(v / GIB, 3) for k, v in parts.items()},
        "loss_gib": round((max(tracker.timeline[i][1] for i in outside) - loss_start) / GIB, 3),
        "computed": ["optimizer_gib"] if computed_optimizer is not None else [],
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def validate(stages: list[int], overrides: list[str], tokenizer) -> list[dict]:
    """The tracer against the allocator at the tiny shape on CPU, per stage config (short blocks, fp32 and
    bf16): the traced and the measured growth of one step over what it starts with."""
    rows = []
    for stage in stages:
        for dtype in ("fp32", "bf16"):
            config = load_config(paths.default_config(stage), overrides + [
                "max_length=128", "micro_batch_size=2", f"dtype={dtype}"])
            traced = trace_step(shape_config("tiny"), config, stage, tokenizer)["step_increase_gib"]
            measured = measure_step(shape_config("tiny"), config, stage, tokenizer)
            rows.append({"stage": stage, "dtype": dtype, "traced_step_gib": round(traced, 4),
                         "measured_step_gib": round(measured, 4), "traced_over_measured": round(traced / measured, 3)})
    return rows


def run(args: Namespace) -> dict:
    model_config = shape_config(args.shape, args.layers)
    with tempfile.TemporaryDirectory(prefix="omics-memory-") as work:
        save_llama3_tokenizer(Path(work))
        tokenizer = load_tokenizer(work, chat=True)
    doc = {"benchmark": "memory", "shape": args.shape, "dtype": args.dtype, "budget_gib": args.budget_gib,
           "method": "FakeTensorMode + torch.distributed._tools.mem_tracker.MemTracker on the real training step; "
                     "CPU kernels (no Liger, SDPA)", "versions": versions(), "overrides": args.overrides}
    for stage in args.stages:
        config = load_config(paths.default_config(stage), args.overrides + [f"dtype={args.dtype}"])
        row = trace_step(model_config, config, stage, tokenizer)
        row |= {"layers": model_config.num_hidden_layers, "micro_batch_size": config.micro_batch_size,
                "max_length": config.max_length,
                "finetune": config.finetune, "fits": row["peak_gib"] <= args.budget_gib}
        doc[f"stage{stage}"] = row
        print(json.dumps({f"stage{stage}": row}), flush=True)
    if args.validate:
        doc["validation"] = validate(args.stages, args.overrides, tokenizer)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(format_table(doc))
    return doc


def format_table(doc: dict) -> str:
    lines = ["| stage | peak GiB | weights | gradients | optimizer | activations | of which loss | fits |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for key, row in doc.items():
        if key.startswith("stage"):
            parts = [f"{row[p]:.2f}" + (" (computed)" if p in row["computed"] else "")
                     for p in ("weights_gib", "gradients_gib", "optimizer_gib", "activations_gib")]
            lines.append(f"| {key} | {row['peak_gib']:.2f} | {' | '.join(parts)} | {row['loss_gib']:.2f} | "
                         f"{'yes' if row['fits'] else 'NO'} (≤ {doc['budget_gib']}) |")
    for row in doc.get("validation", []):
        lines.append(f"validation, tiny shape, stage {row['stage']} {row['dtype']}: traced step "
                     f"{row['traced_step_gib']:.4f} GiB, measured {row['measured_step_gib']:.4f} GiB "
                     f"(×{row['traced_over_measured']})")
    return "\n".join(lines)
