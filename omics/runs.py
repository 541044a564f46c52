"""The folders a command writes: one process at a time, only omics' own files replaced, never old and new lost.

Every run folder carries `.omics-manifest.json`, the entries omics wrote there. A run:

1. refuses an output folder that is, contains or lies inside its inputs, its other output or the project root;
2. locks each folder (`flock` on `.<name>.omics-lock` beside it: the kernel drops it when the process dies);
3. finishes what an earlier, killed run left (see `recover`), then refuses folders holding files omics did
   not write;
4. with `--overwrite`, moves the previous run's entries aside into `.omics-old-<name>` beside the folder;
5. at the end records its entries in the manifest; on success deletes the entries set aside, on failure (or,
   after a kill, on the next command using the folder) moves the new entries out and the old ones back.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import logging
import os
import shlex
import shutil
import sys
from argparse import Namespace
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from pathlib import Path

from omics.errors import UserError
from omics.io import ensure_writable, write_json

log = logging.getLogger("omics")
MANIFEST = ".omics-manifest.json"
JOURNAL = "journal.json"  # in each set-aside folder: the run's folders, so that they are restored together
COMMITTED = "committed"  # in the first set-aside folder: the new run completed, what is set aside can go
# what omics writes, for folders without a manifest (written before manifests existed) or a run killed
# before recording its entries
KNOWN = (
    MANIFEST, "config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "adapter",
    "checkpoints", ".staging", "parameters.json", "data_report.json", "run_summary.json", "tensorboard",
    "metrics.json", "metrics.md", "predictions.jsonl", "predictions.settings.json", "comparison.md", "direct",
    "modes.md", "likelihood.json", "likelihood.md", "report.html", "plots", "comparison.html",
    "likelihood_base_cache.json", "omics_model.json", ".*.tmp", "base-model", "models", "metrics",
)
SHOWN = 3  # foreign files named in a refusal
# a model's own files: in a folder without a manifest they are never omics' (a downloaded base model looks
# exactly like a model omics saved, and must never be replaced)
MODEL_FILES = ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def sibling(folder: Path, role: str) -> Path:
    """`.omics-old-<name>` etc. beside the folder: same file system, so moving in and out is a rename."""
    return folder.parent / f".omics-{role}-{folder.name}"


def refuse_overlaps(outputs: dict[str, Path], inputs: dict[str, Path | None]) -> None:
    """An output folder must not be, contain or lie inside an input, another output or the project root."""
    root = Path.cwd().resolve()
    resolved = {label: Path(path).resolve() for label, path in outputs.items()}
    for label, out in resolved.items():
        if out == root or out in root.parents:
            raise UserError(f"{label} {outputs[label]} is the project root or contains it; "
                            "pick a folder of its own (e.g. under archive/)")
    for label, out in resolved.items():
        guarded = {**{k: Path(v).resolve() for k, v in inputs.items() if v is not None},
                   **{k: v for k, v in resolved.items() if k != label}}
        for other, path in guarded.items():
            if out == path or out in path.parents or path in out.parents:
                raise UserError(f"{label} {outputs[label]} overlaps {other} {path}: a run replaces what is in its "
                                f"output folders, so give {label} a folder of its own, apart from {other}")


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _known(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in KNOWN)


def owned_entries(folder: Path) -> tuple[list[str], list[str]]:
    """(entries omics wrote, the others). A completed run's manifest is exact; a folder without one, or whose
    run never recorded its entries (killed), counts the names omics writes as its own."""
    if not folder.is_dir():
        return [], []
    manifest = read_manifest(folder)
    listed = set(manifest["entries"]) if manifest else set()
    exact = manifest is not None and not manifest.get("open")
    unrecorded_model = manifest is None and (folder / "config.json").is_file()
    owned, foreign = [], []
    for name in sorted(os.listdir(folder)):
        model_file = unrecorded_model and any(fnmatch.fnmatchcase(name, pattern) for pattern in MODEL_FILES)
        is_owned = name == MANIFEST or name in listed or (not exact and _known(name) and not model_file)
        (owned if is_owned else foreign).append(name)
    return owned, foreign


def refuse_foreign(folder: Path) -> None:
    """Omics only ever replaces its own files: refuse a folder that holds others (or is a file)."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder; pass a folder")
    foreign = owned_entries(folder)[1]
    if foreign:
        shown = ", ".join(foreign[:SHOWN]) + (f" and {len(foreign) - SHOWN} more" if len(foreign) > SHOWN else "")
        model = " (a model folder without an omics manifest, e.g. a downloaded base model, is never replaced)"
        raise UserError(f"{folder} holds files omics did not write ({shown}); pick a new or empty folder, "
                        f"or move them out{model if (folder / 'config.json').is_file() else ''}")


class Lock:
    """One process per folder: an exclusive `flock` on `.<name>.omics-lock` beside it, holding the PID and
    command of its holder. The kernel releases it when the process ends, even on kill -9."""

    def __init__(self, target: Path):
        self.target = Path(target)
        self.path = self.target.parent / f".{self.target.name}.omics-lock"
        self.fd: int | None = None
        self.created: list[Path] = []  # parent folders made for the lock file, innermost first

    def __enter__(self) -> Lock:
        self.created = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode(errors="replace").strip() or "another omics process"
                os.close(fd)
                raise UserError(f"{self.target} is in use by {holder}; wait for it to end or stop it "
                                "(one process per run folder)") from None
            try:  # the file may have been unlinked by its previous holder between our open and flock
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} ({shlex.join(['omics', *sys.argv[1:]])})\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)  # while still locked: no other process holds this file
        os.close(self.fd)
        self.fd = None
        for folder in self.created:  # a refused or empty run leaves no folders behind
            try:
                folder.rmdir()
            except OSError:
                break


def _move(source: Path, folder: Path) -> None:
    """Move `source` into `folder`, replacing what has its name there (a leftover of an interrupted move)."""
    folder.mkdir(exist_ok=True)
    target = folder / source.name
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    source.replace(target)


def _restore(folder: Path, names: list[str] | None) -> None:
    """Move the interrupted run's entries out of `folder` and the set-aside ones back (idempotent)."""
    old, back, discard = sibling(folder, "old"), sibling(folder, "restore"), sibling(folder, "discard")
    if old.is_dir():
        owned = owned_entries(folder)[0]
        for name in owned if names is None else [n for n in names if (folder / n).exists()]:
            _move(folder / name, discard)
        old.rename(back)
    if back.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        for entry in back.iterdir():
            if entry.name not in (JOURNAL, COMMITTED):
                if (folder / entry.name).exists():
                    _move(folder / entry.name, discard)
                entry.replace(folder / entry.name)
        shutil.rmtree(back)
    shutil.rmtree(discard, ignore_errors=True)


def _journal(folder: Path) -> dict | None:
    for role in ("old", "restore"):
        path = sibling(folder, role) / JOURNAL
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def _committed(journal: dict) -> bool:
    """The first folder's set-aside copy is marked first and renamed last when a run completes."""
    first = Path(journal["targets"][0])
    old = sibling(first, "old")
    return (old / COMMITTED).is_file() or not (old.exists() or sibling(first, "restore").exists())


def _commit(journal: dict) -> None:
    """The new run is complete: mark it (one atomic file), then delete what was set aside, first folder last."""
    folders = [Path(t) for t in journal["targets"]]
    if sibling(folders[0], "old").is_dir():
        (sibling(folders[0], "old") / COMMITTED).touch()
    for folder in reversed(folders):
        old, discard = sibling(folder, "old"), sibling(folder, "discard")
        if old.exists():
            shutil.rmtree(discard, ignore_errors=True)
            old.rename(discard)
    for folder in folders:
        shutil.rmtree(sibling(folder, "discard"), ignore_errors=True)


def recover(folder: Path, held: dict[Path, Lock]) -> None:
    """Finish what a killed run left beside `folder`: delete what a completed run set aside, or restore the
    previous run (in every folder of that run) when the new one did not complete."""
    folder = Path(folder).resolve()
    for stale in (sibling(folder, "old"), sibling(folder, "restore")):
        if stale.is_dir() and not (stale / JOURNAL).is_file():  # killed before anything was moved into it
            shutil.rmtree(stale)
    journal = _journal(folder)
    if journal is None:
        shutil.rmtree(sibling(folder, "discard"), ignore_errors=True)
        return
    if _committed(journal):
        _commit(journal)
        return
    folders = [Path(t) for t in journal["targets"]]
    with ExitStack() as others:
        for other in folders:
            if other not in held:
                others.enter_context(Lock(other))
        for target in [*folders[1:], folders[0]]:  # the first folder last: see _committed
            _restore(target, journal["names"][str(target)])
    log.warning("restored the previous run in %s: the %r run that was replacing it did not complete",
                ", ".join(map(str, folders)), journal["command"])


class Run:
    """The folders one command writes, held from `with` to its end (see the module docstring).

    `targets`: folder → the names this command writes there (None: every entry omics wrote, as training
    does). `inputs`: what it reads, by label, which its folders must not overlap. `continue_pending`: a
    --resume continues an interrupted --overwrite run instead of restoring the run it replaces.
    """

    def __init__(self, targets: dict[str, tuple[Path, tuple[str, ...] | None]], inputs: dict[str, Path | None],
                 continue_pending: bool = False):
        refuse_overlaps({label: path for label, (path, _) in targets.items()}, inputs)
        self.targets = {Path(path).resolve(): names for path, names in targets.values()}
        self.continue_pending = continue_pending
        self.locks: dict[Path, Lock] = {}
        self.before: dict[Path, tuple[set[str], list[str]]] = {}
        self.journal: dict | None = None  # of the --overwrite this run does or (continue_pending) continues
        self.replacing = False  # this process set the previous run aside
        self.created: set[Path] = set()  # folders begin() made: removed again if the command fails in them

    def __enter__(self) -> Run:
        try:
            for folder in sorted(self.targets):
                self.locks[folder] = Lock(folder).__enter__()
            for folder in self.targets:
                if self.continue_pending and (journal := _journal(folder)) and not _committed(journal):
                    self.journal = journal
                else:
                    recover(folder, self.locks)
                refuse_foreign(folder)
        except BaseException:
            self._unlock()
            raise
        return self

    def begin(self, overwrite: bool) -> None:
        """Create the folders (with `overwrite`, first setting the previous run's entries aside) and mark
        them as being written, so that a kill from here on leaves them recognisably omics'."""
        if overwrite:
            self._set_aside()
        for folder in self.targets:
            if not folder.exists():
                self.created.add(folder)
            folder.mkdir(parents=True, exist_ok=True)
            owned = owned_entries(folder)[0]
            self.before[folder] = (set(os.listdir(folder)), owned)
            self._write_manifest(folder, owned, open_=True)

    def _set_aside(self) -> None:
        folders = list(self.targets)
        self.journal = {"targets": [str(f) for f in folders], "command": shlex.join(["omics", *sys.argv[1:]]),
                        "names": {str(f): list(n) if n is not None else None for f, n in self.targets.items()}}
        for folder in folders:  # every journal is in place before anything moves
            sibling(folder, "old").mkdir()
            write_json(sibling(folder, "old") / JOURNAL, self.journal)
        for folder, names in self.targets.items():
            old = sibling(folder, "old")
            if (folder / MANIFEST).is_file():
                shutil.copy2(folder / MANIFEST, old / MANIFEST)
            owned = owned_entries(folder)[0]
            for name in owned if names is None else [n for n in names if n in owned]:
                if name != MANIFEST:
                    _move(folder / name, old)
        self.replacing = True
        log.info("set the previous run aside in %s (deleted once this run completes)",
                 ", ".join(str(sibling(f, "old")) for f in folders))

    def _write_manifest(self, folder: Path, entries: list[str], open_: bool) -> None:
        command = shlex.join(["omics", *sys.argv[1:]])
        write_json(folder / MANIFEST, {"format": 1, "entries": sorted(set(entries) - {MANIFEST}),
                                        "open": f"PID {os.getpid()} ({command})" if open_ else None})

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            for folder, (before, owned) in self.before.items():
                if exc_type is not None and folder in self.created and os.listdir(folder) == [MANIFEST]:
                    (folder / MANIFEST).unlink()  # a command refused before writing anything leaves no trace
                    folder.rmdir()
                elif folder.is_dir():
                    self._write_manifest(folder, [*owned, *(set(os.listdir(folder)) - before)], open_=False)
            if self.journal is not None and exc_type is None:
                _commit(self.journal)
            elif self.replacing:  # failed after setting the previous run aside: put it back
                recover(next(iter(self.targets)), self.locks)
        finally:
            self._unlock()

    def _unlock(self) -> None:
        for lock in reversed(self.locks.values()):  # last made, first removed: see Lock.created
            lock.__exit__()
        self.locks.clear()


EVALUATION_FILES = ("predictions.jsonl", "predictions.settings.json", "metrics.json", "metrics.md", "comparison.md")
LIKELIHOOD_FILES = ("likelihood.json", "likelihood.md")
SCORE_FILES = ("predictions.jsonl", "metrics.json", "metrics.md")
REPORT_FILES = ("report.html", "plots")  # drawn from all the folder's results: replaced by each command, not refused


def evaluation_files(modes: tuple[str, ...], asked: str | None) -> tuple[str, ...]:
    """What an evaluation replaces: the default mode's files, another mode's folder (`<mode>/`), and modes.md
    (which compares them) for a stage with several modes; `asked` is --mode (a mode, or "both")."""
    if len(modes) == 1:
        return EVALUATION_FILES
    chosen = modes if asked == "both" else (asked,)
    return (*(name for mode in chosen for name in (EVALUATION_FILES if mode == modes[0] else (mode,))), "modes.md")


@contextmanager
def hold_results(label: str, folder: Path, names: tuple[str, ...], overwrite: bool,
                 inputs: dict[str, Path | None], resume: bool = False) -> Iterator[Run]:
    """evaluate / score: earlier results are refused unless --overwrite, which sets them aside until the new
    ones are written, or --resume, which continues them; the other files of the folder (a training run's
    records) stay untouched."""
    with Run({label: (folder, (*names, *REPORT_FILES))}, inputs, continue_pending=resume) as run:
        unfinished = folder / "predictions.jsonl"
        if not (resume or overwrite) and unfinished.is_file() and not (folder / "metrics.json").is_file():
            raise UserError(f"{unfinished} holds results of an earlier run; pass --resume to continue it or "
                            "--overwrite to start again.")
        for name in names if not resume else ():
            ensure_writable(folder / name, overwrite)
        run.begin(overwrite)
        yield run


@contextmanager
def hold_output_file(path: Path, inputs: dict[str, Path | None]) -> Iterator[Lock]:
    """generate, embed, variant-effect: one file (embed: and its index beside it), replaced atomically once
    complete, so the lock is all it needs."""
    refuse_overlaps({"--out": path}, inputs)
    with Lock(path) as lock:
        yield lock


@contextmanager
def hold_demo(workdir: Path, overwrite: bool) -> Iterator[Run]:
    """demo: its whole work folder is one run (set aside as a whole with --overwrite)."""
    with Run({"--workdir": (workdir, None)}, {}) as run:
        ensure_writable(workdir / "models", overwrite)
        run.begin(overwrite)
        yield run


def hold_command(args: Namespace, evaluation: str | None = None, modes: tuple[str, ...] = ("direct",)
                 ) -> AbstractContextManager:
    """What the command `args` writes, held while it runs (training holds its own folders: see train.py);
    `evaluation` is a stage evaluation's kind ("likelihood" or "generation"), `modes` its stage's modes."""
    if evaluation is not None and args.action == "evaluate":
        inputs = {"--model": args.model, "--data": args.data, "--train-data": getattr(args, "train_data", None),
                  "--base-model": getattr(args, "base_model", None)}
        names = LIKELIHOOD_FILES if evaluation == "likelihood" else evaluation_files(modes, getattr(args, "mode", None))
        return hold_results("--metrics-dir", args.metrics_dir, names, args.overwrite, inputs,
                            getattr(args, "resume", False))
    if args.command == "score" and args.out is not None:
        return hold_results("--out", args.out, SCORE_FILES, args.overwrite,
                            {"--predictions": args.predictions, "--train-data": args.train_data, "--model": args.model})
    if args.command in ("generate", "embed", "variant-effect", "pairs"):  # one output file (pairs: a report beside)
        return hold_output_file(args.out, {"--model": args.model, "--data": args.data,
                                           "--train-data": getattr(args, "train_data", None)})
    if args.command == "synthesize":
        return hold_output_file(args.out, {"--data": args.data, "--prompt-template": args.prompt_template})
    if args.command == "demo":
        return hold_demo(args.workdir, args.overwrite)
    return nullcontext()
