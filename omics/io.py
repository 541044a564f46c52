"""Result files written atomically, and the refusal to replace earlier results: shared by every layer that
writes (runs, training, evaluation), so it sits below them all and imports nothing of omics but errors."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from omics.errors import UserError


def ensure_writable(path: Path, overwrite: bool) -> None:
    """Refuse to replace earlier results (a non-empty file or folder) unless the user asked for it."""
    path = Path(path)
    occupied = (path.is_file() and path.stat().st_size > 0) or (path.is_dir() and any(path.iterdir()))
    if occupied and not overwrite:
        raise UserError(f"{path} already exists and is not empty; pass --overwrite to replace it.")


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: Path, binary: bool = False) -> Iterator[IO]:
    """Write beside the target, then rename: a crash never leaves a half-written results file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results get a normal file's permissions
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, binary=True) as f:
        f.write(data)


def write_json(path: Path, document: dict[str, Any]) -> None:
    with atomic_open(path) as f:
        f.write(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")


def count_lines(path: Path) -> int:
    """Non-blank lines: a progress bar's total (millions of lines count in seconds)."""
    with open(path, "rb") as file:
        return sum(1 for line in file if line.strip())
