"""One-way imports: every omics module imports only from its own layer or the layers below it, read from the
source with ast (nothing is imported), function-level and TYPE_CHECKING imports included."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. Data flows readers → examples → packing → trainer → saved model → evaluation through files;
# imports run the other way only: the task layer (what a label, an answer and a score are) sits below data,
# and training may run evaluation (its in-training evaluation), never the reverse.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundations", ("omics", "omics.errors", "omics.paths", "omics.io", "omics.sequences", "omics.device",
                     "omics.config", "omics.tiny", "omics.version", "omics.compat")),
    ("tasks", ("omics.answers", "omics.families", "omics.labels", "omics.scores", "omics.tasktypes",
               "omics.model_card", "omics.rewards")),
    ("model", ("omics.runs", "omics.model", "omics.optim")),
    ("data", ("omics.data.*", "omics.stages")),
    ("evaluate", ("omics.evaluate.*",)),
    ("train", ("omics.loss", "omics.train", "omics.dpo.trainer", "omics.grpo.loop", "omics.vocab.*")),
    ("commands", ("omics.stage1.*", "omics.stage2.*", "omics.stage3.*", "omics.commands.*", "omics.bench.*",
                  "omics.samples.*", "omics.dryrun", "omics.synthesize.*", "omics.serve.*", "omics.sequence_tools.*",
                  "omics.dpo.*", "omics.grpo", "omics.grpo.train", "omics.cli")),
)


def layer_of(module: str) -> int:
    """Index in LAYERS of the entry naming `module` (`pkg.*`: the package and all under it); a KeyError names a
    module no layer holds."""
    for i, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            package = entry.removesuffix(".*")
            if module == package or (entry.endswith(".*") and module.startswith(package + ".")):
                return i
    raise KeyError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")


@functools.cache  # one parse of the tree for all tests
def module_imports(root: Path) -> dict[str, set[str]]:
    """omics module → the omics modules it imports (`from omics import paths` counts as omics.paths)."""
    modules = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
               for p in sorted((root / "omics").rglob("*.py"))}
    imports: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = imports[name] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "omics")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "omics":
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
                found.update(subs or {node.module})
    return imports


def upward_imports(root: Path) -> list[str]:
    """'importer (layer) -> imported (layer)' for every import of a module from a higher layer; every module
    must have a layer."""
    imports = module_imports(root)
    layer = {module: layer_of(module) for module in imports}
    names = [name for name, _ in LAYERS]
    return [f"{importer} ({names[layer[importer]]}) -> {imported} ({names[layer[imported]]})"
            for importer, found in sorted(imports.items()) for imported in sorted(found)
            if layer[imported] > layer[importer]]


def test_no_module_imports_from_a_layer_above_it() -> None:
    assert upward_imports(ROOT) == []


def test_data_never_imports_evaluate() -> None:
    data = {m: found for m, found in module_imports(ROOT).items() if m.startswith("omics.data")}
    assert data and not [(m, i) for m, found in data.items() for i in found if i.startswith("omics.evaluate")]


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    """The checker itself: a lazy import from data/ into evaluate/, and a module no layer declares."""
    def tree(root: Path, files: dict[str, str]) -> Path:
        for name, text in {"omics/__init__.py": "", **files}.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return root

    upward = tree(tmp_path / "upward", {"omics/data/__init__.py": "", "omics/evaluate/__init__.py": "",
                                        "omics/evaluate/parse.py": "",
                                        "omics/data/labels.py": "def f():\n    from omics.evaluate import parse\n"})
    assert upward_imports(upward) == ["omics.data.labels (data) -> omics.evaluate.parse (evaluate)"]
    with pytest.raises(KeyError, match="omics.stray is in no layer"):
        upward_imports(tree(tmp_path / "stray", {"omics/stray.py": ""}))
