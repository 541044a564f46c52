"""The request's directory layout, relative to the project root (the current directory)."""

from __future__ import annotations

from pathlib import Path

BASE_MODEL = Path("Meta-Llama-3.1-8B")
ARCHIVE = Path("archive")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def model_dir(stage: int) -> Path:
    return ARCHIVE / "models" / f"stage{stage}"


def metrics_dir(stage: int) -> Path:
    return ARCHIVE / "metrics" / f"stage{stage}"


def default_config(stage: int) -> Path:
    return CONFIGS / f"stage{stage}.yaml"
