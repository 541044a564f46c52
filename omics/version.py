"""What omics is running: its installed version, and the git commit when it runs from a checkout. No torch."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import omics

CHECKOUT = Path(__file__).resolve().parent.parent


def git_commit() -> str | None:
    """HEAD of the checkout omics is imported from; None for an installed package (or without git)."""
    if not (CHECKOUT / ".git").exists():  # a wheel install inside someone else's repository is not ours
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=CHECKOUT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def version_line() -> str:
    """`omics 0.1.0 (git 0123456789ab)`, or without the commit outside a checkout."""
    try:
        version = metadata.version("omics")
    except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        version = omics.__version__
    commit = git_commit()
    return f"omics {version}" + (f" (git {commit[:12]})" if commit else "")
