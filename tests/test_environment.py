"""The tested environment: constraints ⊂ pyproject bounds ∋ installed versions; the start-up report."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from helpers import cli
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from omics.device import OPTIONAL, has_package, use_cuda

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parent.parent
UPPER_BOUNDED = {"transformers", "peft", "accelerate", "torchao", "liger-kernel"}  # we use their internals


def pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {canonicalize_name(r.name): r for r in map(Requirement, listed)}


def constraints() -> dict[str, Version]:
    pins = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][^\s;]*)", line)
            assert match, f"constraints.txt:{number}: expected name==version, got {line!r}"
            pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def installed(name: str) -> Version | None:
    try:
        return Version(metadata.version(name))
    except metadata.PackageNotFoundError:
        return None


def test_constraints_fit_pyproject_bounds_and_the_installed_versions():
    required, pins = pyproject_requirements(), constraints()
    for name in UPPER_BOUNDED:
        assert any(spec.operator in ("<", "<=", "==") for spec in required[name].specifier), name
    assert {"torch", "transformers", "peft", "accelerate", "torchao"} <= pins.keys()
    for name, version in pins.items():
        if name in required:
            assert required[name].specifier.contains(version, prereleases=True), (name, version)
        here = installed(name)
        assert here is not None and here.public == str(version), f"{name}: installed {here}, pinned {version}"
    for name in UPPER_BOUNDED:
        if installed(name):
            assert required[name].specifier.contains(installed(name), prereleases=True), name


def test_make_install_uses_the_constraints():
    dry_run = subprocess.run(["make", "-n", "install"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    pip_lines = [line for line in dry_run.splitlines() if "pip install" in line and "--no-deps" not in line]
    assert pip_lines and all("-c constraints.txt" in line for line in pip_lines), dry_run


def test_start_up_line_lists_what_is_installed(monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="omics")
    (tmp_path / "questions.jsonl").write_text('{"input": "q"}\n')  # the data exists: the model folder does not
    assert cli(monkeypatch, tmp_path, "generate", "--model", "missing", "--data", "questions.jsonl",
               "--out", "out.jsonl") == 2
    line = next(r.getMessage() for r in caplog.records if "optional kernels/backends" in r.getMessage())
    found, missing = line.split("; not installed: ")
    for name, module in OPTIONAL.items():
        if has_package(module):
            assert f"{name} {metadata.version(name)}" in found
        else:
            assert name in missing.split("; ")[0] and name not in found
    assert ("device: CUDA" in line) == use_cuda() and ("CPU (no CUDA)" in line) != use_cuda()


@pytest.mark.skipif(not os.environ.get("OMICS_NETWORK_TESTS"), reason="resolves against PyPI: OMICS_NETWORK_TESTS=1")
def test_vllm_environment_resolves_with_vllms_own_torch(tmp_path):
    """What `make vllm-env` installs, resolved (metadata only): vLLM's pinned torch, our bounds kept."""
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                    "--report", str(report), "-e", f"{ROOT}[vllm]"], check=True, capture_output=True)
    resolved = {canonicalize_name(item["metadata"]["name"]): item["metadata"]
                for item in json.loads(report.read_text())["install"]}
    torch_pin = next(Requirement(r) for r in resolved["vllm"]["requires_dist"] if Requirement(r).name == "torch")
    assert torch_pin.specifier.contains(resolved["torch"]["version"])
    for name, requirement in pyproject_requirements().items():
        if name in resolved:
            assert requirement.specifier.contains(resolved[name]["version"], prereleases=True), name
