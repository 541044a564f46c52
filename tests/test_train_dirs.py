"""Run-directory rules: a checkpoint left half-written by a kill is set aside before resuming."""

from __future__ import annotations

from pathlib import Path

import pytest

from omics.errors import UserError
from omics.train import RunArgs, check_directories, set_aside_incomplete_checkpoints


def _args(tmp_path: Path, **flags) -> RunArgs:
    return RunArgs(data=tmp_path / "d.txt", base_model=tmp_path / "base", output_dir=tmp_path / "model",
                   metrics_dir=tmp_path / "metrics", config=tmp_path / "c.yaml", **flags)


def test_incomplete_checkpoint_is_set_aside(tmp_path):
    checkpoints = tmp_path / "model" / "checkpoints"
    (checkpoints / "checkpoint-2").mkdir(parents=True)
    (checkpoints / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    (checkpoints / "checkpoint-4").mkdir()  # killed while saving: no trainer_state.json
    assert set_aside_incomplete_checkpoints(checkpoints) == ["checkpoint-4"]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "incomplete-checkpoint-4"]
    check_directories(_args(tmp_path, resume=True))  # resumable from checkpoint-2


def test_resume_needs_a_complete_checkpoint(tmp_path):
    (tmp_path / "model" / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    with pytest.raises(UserError, match="no complete checkpoint"):
        check_directories(_args(tmp_path, resume=True))
    with pytest.raises(ValueError, match="contradict"):
        check_directories(_args(tmp_path, resume=True, overwrite=True))
