"""What the CLI tells a user: their own mistakes and the file system's refusals as one line, our bugs in full."""

from __future__ import annotations

import errno

# errno → what the user can do about it
ADVICE = {
    errno.EACCES: "check its permissions (ls -l) or choose another path",
    errno.EPERM: "check its permissions (ls -l) or choose another path",
    errno.EISDIR: "pass a file",
    errno.ENOTDIR: "a part of the path is a file, not a directory; pass a directory",
    errno.ENOENT: "check the path",
    errno.EEXIST: "a file is in the way of a folder; choose another path",
    errno.ENOSPC: "the disk is full; free space or choose another disk",
    errno.EDQUOT: "the disk quota is used up; free space or choose another disk",
    errno.EROFS: "the file system is read-only; choose a writable path",
    errno.ENOTEMPTY: "the directory is not empty; choose another path",
}


class UserError(ValueError):
    """A problem the user caused and can fix: the CLI prints its message as one line and exits with 2.

    A ValueError, so callers that caught ValueError before keep working; the CLI catches only this one,
    so a ValueError from a bug keeps its traceback.
    """


def os_error_line(err: OSError) -> str:
    """`PATH: reason; what to do` for an OSError from the file system (our own messages pass unchanged)."""
    if err.errno is None:
        return str(err)
    paths = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None) or "(no path)"
    advice = ADVICE.get(err.errno, "check the path and the disk")
    return f"{paths}: {err.strerror or err}; {advice}"
