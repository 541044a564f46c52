"""Fault injection: run an `omics` command in a subprocess that SIGKILLs itself at a chosen call.

`run_killed(cwd, argv, "transformers.trainer:Trainer._save_checkpoint", nth=2)` starts a fresh Python that
replaces that function by one that kills the process (no cleanup, no `finally`, as `kill -9` or a power cut
would) on its `nth` call whose arguments mention `arg_contains`, then runs `omics ARGV`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

WRAPPER = """
import functools, importlib, os, signal, sys
module, _, attribute = {target!r}.partition(":")
owner = importlib.import_module(module)
*parents, name = attribute.split(".")
for parent in parents:
    owner = getattr(owner, parent)
original = getattr(owner, name)
calls = 0

@functools.wraps(original)
def kill_at_nth_call(*args, **kwargs):
    global calls
    if {arg_contains!r} in repr(args) + repr(kwargs):
        calls += 1
        if calls == {nth}:
            os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)

setattr(owner, name, kill_at_nth_call)
from omics.cli import main
sys.exit(main({argv!r}))
"""


def run_killed(cwd: Path, argv: list[str], target: str, nth: int = 1, arg_contains: str = "") -> str:
    """Run `omics ARGV` in `cwd`, killed at the `nth` matching call of `target` ("module:Class.attr");
    return its stderr. Fails if the process was not killed there (the kill point was never reached)."""
    script = WRAPPER.format(target=target, nth=nth, arg_contains=arg_contains, argv=[str(a) for a in argv])
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == -signal.SIGKILL, f"not killed at {target} #{nth} (exit {done.returncode}):\n" \
                                               f"{done.stderr[-3000:]}"
    return done.stderr
