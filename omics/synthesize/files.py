"""The files a synthesis writes beside --out, and what a rerun reads back from them.

OUT (the Stage 3 lines) and OUT-stem.rejected.jsonl are append-only: each line is written whole and flushed, and
fsynced at least once a second, so a kill loses at most the lines in flight; a line torn by the kill at a file's
end is cut off when the file is opened again. OUT-stem.summary.json (written atomically, first of all) records the
settings, so a rerun continues only the same synthesis, and marks the files as omics'.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import IO, Any

from omics.errors import UserError
from omics.io import write_json
from omics.synthesize.prompt import original_output
from omics.synthesize.select import record_key

log = logging.getLogger("omics")
FORMAT = "omics-synthesize/1"
FSYNC_EVERY_S = 1.0


def beside(out: Path) -> tuple[Path, Path]:
    """(rejected lines, summary) for --out: reasoning.jsonl → reasoning.rejected.jsonl, reasoning.summary.json."""
    stem = out.name.removesuffix(".jsonl")
    return out.with_name(f"{stem}.rejected.jsonl"), out.with_name(f"{stem}.summary.json")


class LineLog:
    """An append-only .jsonl file of finished lines."""

    def __init__(self, path: Path):
        self.path = path
        self.handle: IO[str] | None = None
        self.synced = time.monotonic()

    def read(self) -> list[dict]:
        """The complete lines written so far; a torn last line (no newline: the process was killed while writing
        it) is cut off the file."""
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        kept = data[: data.rfind(b"\n") + 1]
        if len(kept) < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(len(kept))
            log.warning("%s: dropped a last line torn by a kill (%d bytes); it is asked again", self.path,
                        len(data) - len(kept))
        rows = []
        for number, line in enumerate(kept.decode("utf-8").splitlines(), 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserError(f"{self.path}:{number}: not a line omics wrote ({err.msg}); restore the file, or "
                                "pass --overwrite to start the synthesis again") from None
        return rows

    def append(self, row: dict) -> None:
        if self.handle is None:
            self.handle = self.path.open("a", encoding="utf-8")
        self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.handle.flush()
        if time.monotonic() - self.synced >= FSYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        if self.handle is not None:
            os.fsync(self.handle.fileno())
        self.synced = time.monotonic()

    def close(self) -> None:
        if self.handle is not None:
            self.sync()
            self.handle.close()
            self.handle = None


class Results:
    """--out, its rejected lines and its summary, as one synthesis."""

    def __init__(self, out: Path):
        rejected, self.summary_path = beside(out)
        self.accepted, self.rejected = LineLog(out), LineLog(rejected)

    def previous(self, settings: dict[str, Any], overwrite: bool) -> dict | None:
        """The summary of the synthesis these files hold, to continue; None to start afresh. Files omics did not
        write are refused; a synthesis of other data or settings too, unless `overwrite` (then its files go)."""
        files = [p for p in (self.accepted.path, self.rejected.path, self.summary_path) if p.exists()]
        summary = json.loads(self.summary_path.read_text(encoding="utf-8")) if self.summary_path.is_file() else None
        if not isinstance(summary, dict) or summary.get("format") != FORMAT:
            if files:
                raise UserError(f"{files[0]} was not written by omics synthesize (no {self.summary_path.name} of "
                                "its own beside it); choose another --out or move it away")
            return None
        differs = [k for k in settings if summary["settings"].get(k) != settings[k]]
        if not overwrite and differs:
            raise UserError(f"{self.accepted.path} was made from other data or settings ({', '.join(differs)} "
                            "differ); rerun with the same ones to continue it, pass --overwrite to start again, or "
                            "choose another --out")
        if overwrite:
            for path in files:
                path.unlink()
            return None
        return summary

    def done(self) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
        """key → task of the lines kept, key → (task, reason) of those rejected: what a rerun does not ask again."""
        kept = {record_key({**line, "output": original_output(line)}): line["task"] for line in self.accepted.read()}
        rejected = {row["key"]: (row["task"], row["reason"]) for row in self.rejected.read()}
        return kept, rejected

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary_path, {"format": FORMAT, **summary})

    def close(self) -> None:
        self.accepted.close()
        self.rejected.close()
