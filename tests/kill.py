"""Fault injection: run an `omics` command in a child process that SIGKILLs itself at a chosen call.

`run_killed(cwd, argv, "transformers.trainer:Trainer._save_checkpoint", nth=2)` runs `omics ARGV` in a fresh
process where that function kills the process (no cleanup, no `finally`, as `kill -9` or a power cut would)
on its `nth` call whose arguments mention `arg_contains`. Children are forked from one clean interpreter that
imported omics once (multiprocessing's forkserver, not the test process): each costs the run, not the ~8 s
of importing torch and transformers again.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import multiprocessing
import os
import signal
import sys
from pathlib import Path

from omics.cli import main

FORKSERVER = multiprocessing.get_context("forkserver")
FORKSERVER.set_forkserver_preload(["omics.cli", "omics.train", "peft"])
RUNS = itertools.count()


def _kill_at(target: str, nth: int, arg_contains: str) -> None:
    module, _, attribute = target.partition(":")
    *parents, name = attribute.split(".")
    owner = functools.reduce(getattr, parents, importlib.import_module(module))
    original, calls = getattr(owner, name), 0

    @functools.wraps(original)
    def kill_at_nth_call(*args, **kwargs):
        nonlocal calls
        if arg_contains in repr(args) + repr(kwargs):
            calls += 1
            if calls == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, name, kill_at_nth_call)


def _child_main(cwd: Path, argv: list[str], log: Path, kill: tuple[str, int, str] | None = None) -> None:
    os.chdir(cwd)
    with log.open("w") as out:  # the forkserver's stdio belong to whichever test started it
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    if kill is not None:
        _kill_at(*kill)
    sys.exit(main([str(a) for a in argv]))


def _run_child(cwd: Path, argv: list[str], kill: tuple[str, int, str] | None, name: str) -> tuple[int | None, Path]:
    log = Path(cwd) / f"{name}-{next(RUNS)}.log"
    child = FORKSERVER.Process(target=_child_main, args=(Path(cwd), argv, log, kill))
    child.start()
    child.join(timeout=600)
    if child.exitcode is None:
        child.kill()
    return child.exitcode, log


def run_in_child(cwd: Path, argv: list[str]) -> int:
    """Run `omics ARGV` in `cwd` in a forked child, as `run_killed` does but to the end: runs compared bit for bit
    then start from the same process state (BLAS threads, allocator), which the test process no longer has."""
    code, log = _run_child(cwd, argv, None, "child")
    assert code is not None, f"omics {' '.join(map(str, argv))} did not finish:\n{log.read_text()[-3000:]}"
    return code


def run_killed(cwd: Path, argv: list[str], target: str, nth: int = 1, arg_contains: str = "") -> None:
    """Run `omics ARGV` in `cwd`, killed at the `nth` matching call of `target` ("module:Class.attr").
    Fails if the process was not killed there (the kill point was never reached)."""
    code, log = _run_child(cwd, argv, (target, nth, arg_contains), "killed")
    assert code == -signal.SIGKILL, f"not killed at {target} #{nth} (exit {code}):\n{log.read_text()[-3000:]}"
    log.unlink()
