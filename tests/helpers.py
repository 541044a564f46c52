"""Helpers shared by the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omics import paths
from omics.cli import main

SAMPLES = paths.SAMPLES


def cli(mp: pytest.MonkeyPatch, cwd: Path, *argv: str) -> int:
    """Run `omics ARGV` in `cwd` as the command line would, without leaking pin_one_gpu's env changes."""
    mp.chdir(cwd)
    for name in ("CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF"):
        mp.delenv(name, raising=False)  # restored when mp undoes
    mp.setattr("omics.device._pinned", None)  # pinned once per process: each command here is a fresh one
    if torch.cuda.is_initialized():  # a second in-process command cannot pin again; a real CLI run can
        mp.setattr("omics.cli.pin_one_gpu", lambda index=0: str(index))
    return main(list(argv))


def head(name: str, n: int) -> list[str]:
    """The first n lines of a bundled sample file."""
    with (SAMPLES / name).open(encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]
