"""The one-GPU rule, and the runtime choices that depend on the machine (dtype, attention, kernels).

`pin_one_gpu` must run before torch initialises CUDA: the HF Trainer wraps the model in DataParallel as
soon as it sees several GPUs, and the request forbids multi-GPU use on the user's machine.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
from importlib import metadata

from omics.errors import UserError

log = logging.getLogger("omics")


_pinned: tuple[int, str] | None = None  # (--gpu index, what it made visible): CUDA reads the variable only once


def pin_one_gpu(index: int = 0) -> str:
    """Make exactly one GPU visible: the `index`-th of those visible now. Returns what was pinned. Once per
    process: a later call (the demo runs each step in-process) with the same index keeps that GPU, even after
    CUDA started; another index is refused, since the first GPU can no longer be released."""
    global _pinned
    if _pinned is not None:
        pinned_index, chosen = _pinned
        if index != pinned_index:
            raise UserError(f"--gpu {index}: this process already uses --gpu {pinned_index} "
                            f"(CUDA_VISIBLE_DEVICES={chosen}); run another command for another GPU")
        return chosen
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialised before the GPU was pinned; call pin_one_gpu first")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    candidates = [d.strip() for d in visible.split(",") if d.strip()] if visible is not None else None
    if candidates is not None and not candidates:
        chosen = "none (CUDA_VISIBLE_DEVICES is empty)"
    elif candidates is not None and index >= len(candidates):
        raise UserError(f"--gpu {index}: only {len(candidates)} GPU(s) visible ({visible})")
    else:
        chosen = candidates[index] if candidates is not None else str(index)
        os.environ["CUDA_VISIBLE_DEVICES"] = chosen
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    _pinned = (index, chosen)
    return chosen


def has_package(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# optional packages that change what runs: distribution name → import name
OPTIONAL = {"liger-kernel": "liger_kernel", "flash-attn": "flash_attn", "vllm": "vllm", "torchao": "torchao"}


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # importable without install metadata (e.g. a source checkout)
        return "(version unknown)"


def optional_features() -> str:
    """One line: which optional kernels and backends this environment has, and the CUDA device (if any)."""
    import torch

    found = [f"{name} {_version(name)}" for name, module in OPTIONAL.items() if has_package(module)]
    missing = [name for name, module in OPTIONAL.items() if not has_package(module)]
    device = f"CUDA {torch.version.cuda} on {torch.cuda.get_device_name(0)}" if use_cuda() else "CPU (no CUDA)"
    return (f"optional kernels/backends found: {', '.join(found) or 'none'}; "
            f"not installed: {', '.join(missing) or 'none'}; device: {device}")


def use_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


DTYPES = ("auto", "bf16", "fp16", "fp32")


def model_dtype(requested: str = "auto"):
    """The weights' dtype: as requested, or `auto` = bf16 on GPUs that have it, fp16 on others, fp32 on CPU (CPU
    bf16 matmuls are slow and lossy for tiny models; `bf16` on CPU runs the GPU's precision path, for tests)."""
    import torch

    if requested not in DTYPES:
        raise UserError(f"dtype must be one of {DTYPES}, got {requested!r}")
    if requested == "auto" and use_cuda():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"auto": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[requested]


def weights_dtype(model):
    """The dtype the model's weights are stored in: its lowest precision (LoRA's trained copies are fp32)."""
    import torch

    return min((p.dtype for p in model.parameters() if p.is_floating_point()), key=lambda d: torch.finfo(d).bits)


def mixed_precision(model):
    """Autocast to the model's weights dtype: LoRA's trained fp32 copies (norms, adapters, token rows) then meet
    bf16/fp16 frozen weights in one matmul dtype. Needed wherever a forward bypasses the top-level
    `model.forward`, which is the only call accelerate wraps in autocast. A no-op for an fp32 model."""
    import torch

    dtype = weights_dtype(model)
    return torch.autocast(next(model.parameters()).device.type, dtype=dtype, enabled=dtype != torch.float32)


def attention_implementation(requested: str = "auto") -> str:
    """flash_attention_2 only when the user installed it (no PyPI wheel exists), else SDPA."""
    if requested != "auto":
        return requested
    if use_cuda() and has_package("flash_attn"):
        return "flash_attention_2"
    if use_cuda():
        log.info("flash-attn not installed: SDPA attention with the packed-sequence mask")
    return "sdpa"


@functools.cache
def liger_available(wanted: bool) -> bool:
    """Liger's Triton kernels need CUDA and the package; say so once when they are wanted but absent."""
    if not wanted:
        return False
    if not use_cuda():
        return False
    if not has_package("liger_kernel"):
        log.info("liger-kernel not installed: using PyTorch RMSNorm/SwiGLU/cross-entropy (pip install omics[gpu])")
        return False
    return True


def describe() -> dict[str, str | int | None]:
    """What the run executes on, for the run's parameters file."""
    import torch

    if not use_cuda():
        return {"device": "cpu", "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    props = torch.cuda.get_device_properties(0)
    return {
        "device": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cuda": torch.version.cuda,
        "visible_count": torch.cuda.device_count(),
    }


def default_batch_tokens(requested: int | None) -> int:
    """Tokens per evaluation batch: 64k on a GPU (an 8B model's KV cache for them is ~8 GB), 8k on CPU."""
    return requested or (65536 if use_cuda() else 8192)
