"""The tokenised-data cache lives with the run (beside its model folder) or in the shared `--cache-dir`, never in
the current directory's archive/, and survives --overwrite."""

from __future__ import annotations

from pathlib import Path

from helpers import cli

from omics.paths import CACHE

FAST = [f"--set={item}" for item in ("max_length=64", "micro_batch_size=2", "grad_accum=1", "lora_r=4",
                                     "warmup_ratio=0", "max_steps=1", "save_steps=1")]


def train(monkeypatch, project: Path, base: Path, run: Path, *extra: str) -> int:
    return cli(monkeypatch, project, "stage1", "train", "--data", "train.txt", "--base-model", str(base),
               "--output-dir", str(run / "model"), "--metrics-dir", str(run / "metrics"), *FAST, *extra)


def blocks(cache: Path) -> dict[str, int]:
    """The cached packed data files → their modification times (unchanged when a run reads instead of writes)."""
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.glob("stage1-*/blocks.arrow")}


def test_cache_lives_beside_the_model_or_in_cache_dir(tiny_model, tmp_path, monkeypatch):
    project, elsewhere, shared = tmp_path / "project", tmp_path / "elsewhere", tmp_path / "shared"
    project.mkdir()
    (project / "train.txt").write_text("".join(f"{'ACGT' * (5 + i % 7)}\n" for i in range(16)))
    assert train(monkeypatch, project, tiny_model, elsewhere / "a") == 0
    beside = blocks(elsewhere / "a" / CACHE)
    assert len(beside) == 1
    assert train(monkeypatch, project, tiny_model, elsewhere / "b", "--cache-dir", str(shared)) == 0
    written = blocks(shared)
    assert len(written) == 1 and not (elsewhere / "b" / CACHE).exists()
    assert train(monkeypatch, project, tiny_model, tmp_path / "c", "--cache-dir", str(shared)) == 0
    assert blocks(shared) == written and not (tmp_path / "c" / CACHE).exists()  # read, not written again
    assert train(monkeypatch, project, tiny_model, elsewhere / "a", "--overwrite") == 0
    assert blocks(elsewhere / "a" / CACHE) == beside  # --overwrite keeps the cache: read again, not rebuilt
    assert not (project / "archive").exists()


def test_cache_dir_inside_an_output_folder_is_refused(tiny_model, tmp_path, monkeypatch, caplog):
    (tmp_path / "train.txt").write_text("ACGT\n")
    run = tmp_path / "run"
    assert train(monkeypatch, tmp_path, tiny_model, run, "--cache-dir", str(run / "model" / "cache")) == 2
    assert "overlaps --cache-dir" in caplog.text and not run.exists()
