"""`pip install .` works anywhere: the wheel ships every module, the configs and the samples, and its `omics` runs
from any folder of a fresh environment holding only the wheel (the libraries shared from this one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = {f"omics/configs/{d}{name}.yaml" for d in ("", "demo/") for name in ("stage1", "stage2", "stage3", "dpo")} | {
    "omics/configs/grpo.yaml"} | {
    f"omics/samples/{name}" for name in ("stage1_train.txt", "stage1_heldout.txt", "stage2_train.jsonl",
                                         "stage2_test.jsonl", "stage3_train.jsonl", "stage2_valid.jsonl",
                                         "stage3_valid.jsonl")}
PIP = ["-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]


def run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """A command outside this checkout: no PYTHONPATH, so only the installed omics can be imported."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv}: {done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built offline from a copy of the sources (the build writes build/ and *.egg-info beside them)."""
    source, dist = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    shutil.copytree(ROOT / "omics", source / "omics", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    run(sys.executable, *PIP, "wheel", "--no-deps", "--no-build-isolation", "--no-index", source, "-w", dist,
        cwd=source)
    return next(dist.glob("omics-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> SimpleNamespace:
    """A new virtual environment with the wheel installed (`--system-site-packages`: torch etc. come from here)."""
    env = tmp_path_factory.mktemp("venv")
    venv.create(env, system_site_packages=True, with_pip=False)
    python = env / "bin" / "python"
    run(python, *PIP, "install", "--no-deps", "--no-index", wheel, cwd=env)
    return SimpleNamespace(env=env, python=python, omics=env / "bin" / "omics")


def test_wheel_ships_every_module_the_configs_and_the_samples(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "omics").rglob("*.py") if "__pycache__" not in p.parts}
    assert names >= SHIPPED | modules, sorted((SHIPPED | modules) - names)
    assert {n.split("/")[0] for n in names} == {"omics", wheel.name.split("-py3")[0] + ".dist-info"}


def test_installed_commands_work_from_any_folder(installed, tmp_path):
    found = json.loads(run(installed.python, "-c", """if True:
        import json, omics
        from omics import paths
        from omics.config import load_config
        configs = [paths.default_config(n) for n in (1, 2, 3, "dpo", "grpo")]
        configs += sorted(paths.DEMO_CONFIGS.glob("*.yaml"))
        for config in configs:
            load_config(config)
        print(json.dumps({"package": omics.__file__, "samples": str(paths.SAMPLES),
                          "configs": [str(c) for c in configs]}))""", cwd=tmp_path).stdout)
    site = installed.env.resolve()
    assert Path(found["package"]).resolve().is_relative_to(site)  # the wheel's copy, not this checkout
    assert len(found["configs"]) == 9 and all(Path(c).resolve().is_relative_to(site) for c in found["configs"])
    assert "stage1" in run(installed.omics, "--help", cwd=tmp_path).stdout
    samples = Path(found["samples"])
    with (tmp_path / "answers.jsonl").open("w", encoding="utf-8") as answers:  # the paper evaluator's format
        for line in (samples / "stage2_test.jsonl").open(encoding="utf-8"):
            row = json.loads(line)
            answers.write(json.dumps({**{k: row[k] for k in ("task", "label")}, "model_output": row["output"]}) + "\n")
    run(installed.omics, "score", "--predictions", "answers.jsonl", "--train-data", samples / "stage2_train.jsonl",
        "--out", "scored", cwd=tmp_path)
    overall = json.loads((tmp_path / "scored" / "metrics.json").read_text())["overall"]
    assert overall["n_examples"] == 150 and overall["mixed_score_mean"] == pytest.approx(100)  # the references


@pytest.mark.slow
def test_demo_runs_from_the_wheel(installed, tmp_path):
    """The whole demo from the wheel install, in a folder of its own (~10-20 min on 2 CPU cores)."""
    run(installed.omics, "demo", cwd=tmp_path)
    assert (tmp_path / "archive" / "demo" / "metrics" / "comparison.md").is_file()
