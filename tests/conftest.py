"""Shared fixtures: one tiny random Llama on the real Llama-3 tokenizer (built once), and file writing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama (default sizes of `build_tiny_llama`) saved once per test session; treat it as read-only."""
    from omics.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tokenizer(tiny_model: Path):
    """The tiny model's (= Llama-3.1 base) tokenizer, loaded the way training loads it (no chat template)."""
    from omics.model import load_tokenizer

    return load_tokenizer(tiny_model, chat=False)


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[..., Path]:
    """`write_file(name, content)`: write str (UTF-8) or bytes under tmp_path; lists of lines are joined."""

    def write(name: str, content: str | bytes | list[str]) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, list):
            content = "".join(f"{line}\n" for line in content)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write
