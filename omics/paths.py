"""The request's directory layout, relative to the project root (the current directory), and the files shipped
inside the package (configs, samples), found wherever omics is installed."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

BASE_MODEL = Path("Meta-Llama-3.1-8B")
DEFAULT_ARCHIVE = Path("archive")
ARCHIVE = DEFAULT_ARCHIVE  # the folder of models/ and metrics/: `omics --root DIR` (cli.use_root) sets it
CACHE = ".omics-cache"  # beside a run's model folder: see cache_dir


def _shipped(name: str) -> Path:
    """A folder of package data, through importlib.resources: the same code finds it in a checkout, an editable
    install and a wheel install (pip unpacks wheels, so it is a real folder)."""
    folder = resources.files("omics") / name
    if not isinstance(folder, Path):
        raise RuntimeError(f"omics' package data must be on disk, found {folder}: install omics with pip")
    return folder


CONFIGS = _shipped("configs")
DEMO_CONFIGS = CONFIGS / "demo"
SAMPLES = _shipped("samples")


def stage_name(stage: int | str) -> str:
    """A stage's folder name: Stage N's is "stageN", a named stage's its name ("dpo")."""
    return f"stage{stage}" if isinstance(stage, int) else stage


def model_dir(stage: int | str) -> Path:
    return ARCHIVE / "models" / stage_name(stage)


def metrics_dir(stage: int | str) -> Path:
    return ARCHIVE / "metrics" / stage_name(stage)


def default_config(stage: int | str) -> Path:
    return CONFIGS / f"{stage_name(stage)}.yaml"


def cache_dir(output_dir: Path) -> Path:
    """The tokenised-data cache of a run: beside its model folder, so runs of one project share it, a copied
    model folder carries no cache, and --overwrite (which sets a run folder's own entries aside) never drops it."""
    return output_dir.parent / CACHE
