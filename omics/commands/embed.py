"""`omics embed --model DIR --data FILE --out vectors.npy`: one vector per sequence, for files of millions.

Two passes over the data: the first checks every sequence (a bad line stops before the model loads) and
writes the index (`vectors.index.tsv`: row, id, line, length in residues, molecule); the second embeds the
sequences a window of WINDOW at a time (sorted by length inside it, never across the whole file) into a
preallocated `.npy` on disk (numpy's memmap), so memory stays bounded whatever the file's size.

Until the run completes everything is hidden beside `--out`: `.vectors.npy.partial.npy`, its index and
`.vectors.npy.progress.json` (the rows done, rewritten atomically after each window). A killed run (even
kill -9) continues with `--resume`, losing at most the window it was in; the visible files appear, index
first and the `.npy` last, only when every row is written.
"""

from __future__ import annotations

import csv
import json
import os
from argparse import Namespace
from itertools import islice
from pathlib import Path

from omics.errors import UserError

WINDOW = 4096  # sequences sorted and embedded together: bounded memory, little padding
DEFAULT_MAX_LENGTH = 2048  # Stage 1's training window, for a model folder that records none
INDEX_COLUMNS = ("row", "id", "line", "length", "molecule")


def index_path(out: Path) -> Path:
    return out.with_suffix(".index.tsv")


def _hidden(out: Path, role: str) -> Path:
    return out.with_name(f".{out.name}.{role}")


def _write_index(data: Path, path: Path) -> int:
    """Check every sequence and write the index atomically; returns the number of sequences."""
    from omics.io import atomic_open
    from omics.sequence_tools.records import read_records

    rows = 0
    with atomic_open(path) as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(INDEX_COLUMNS)
        for rows, record in enumerate(read_records(data), 1):
            writer.writerow((rows - 1, record.id, record.line, len(record.sequence), record.molecule))
    return rows


def _resumed_progress(progress: Path, settings: dict) -> int:
    """Rows an interrupted run wrote with the same settings."""
    if not progress.is_file():
        raise UserError(f"--resume: no interrupted run of this --out ({progress} not found); run without --resume")
    written = json.loads(progress.read_text(encoding="utf-8"))
    changed = [key for key, value in settings.items() if written["settings"].get(key) != value]
    if changed:
        raise UserError(f"--resume: the interrupted run used other {', '.join(changed)}; rerun with its settings, "
                        "or --overwrite to start again")
    return written["done"]


def run(args: Namespace) -> int:
    import numpy as np
    from numpy.lib.format import open_memmap
    from tqdm import tqdm
    from transformers import AutoConfig

    from omics.data.packing import file_sha256, model_fingerprint
    from omics.device import default_batch_tokens
    from omics.io import ensure_writable, write_json
    from omics.model import load_model, load_tokenizer, require_model_dir
    from omics.model_card import read_card
    from omics.sequence_tools.embedding import check_layer, embed_sequences
    from omics.sequence_tools.records import read_records

    if args.out.suffix != ".npy":
        raise UserError(f"--out {args.out}: expected a .npy file (the index is written beside it as .index.tsv)")
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    if args.resume and args.out.exists():
        raise UserError(f"{args.out} is finished; nothing to resume. Pass --overwrite to embed again.")
    ensure_writable(args.out, args.overwrite or args.resume)
    ensure_writable(index_path(args.out), args.overwrite or args.resume)
    vectors, index, progress = (_hidden(args.out, role) for role in ("partial.npy", "partial.index.tsv",
                                                                      "progress.json"))
    if progress.exists() and not (args.resume or args.overwrite):
        raise UserError(f"{progress}: an interrupted run of this --out; pass --resume to continue it or "
                        "--overwrite to start again")
    model_dir = require_model_dir(args.model, "Pass a model folder (e.g. archive/models/stage1).")
    max_length = args.max_length or read_card(model_dir).max_length or DEFAULT_MAX_LENGTH
    if max_length < 2:
        raise UserError(f"--max-length must be at least 2 (BOS and one token), got {max_length}")
    layer = check_layer(AutoConfig.from_pretrained(model_dir), args.layer)
    settings = {"data": str(args.data.resolve()), "data_sha256": file_sha256(args.data),
                "model": str(model_dir.resolve()), "model_files": model_fingerprint(model_dir), "layer": args.layer,
                "pool": args.pool, "max_length": max_length, "dtype": args.dtype}
    if args.resume:
        done = _resumed_progress(progress, settings)
        total = len(np.load(vectors, mmap_mode="r"))
    else:
        done, total = 0, _write_index(args.data, index)
    model = load_model(model_dir, dtype=args.dtype).eval()
    tokenizer = load_tokenizer(model_dir, chat=False)
    if not args.resume:
        open_memmap(vectors, mode="w+", dtype=np.float32, shape=(total, model.config.hidden_size)).flush()
        write_json(progress, {"settings": settings, "done": 0})
    matrix = open_memmap(vectors, mode="r+")
    records = islice(read_records(args.data), done, None)
    with tqdm(total=total, initial=done, desc=f"embed {args.data.name}", unit="seq") as bar:
        while window := [record.sequence for record in islice(records, WINDOW)]:
            matrix[done : done + len(window)] = embed_sequences(
                model, tokenizer, window, layer, args.pool, max_length, default_batch_tokens(args.batch_tokens), bar)
            matrix.flush()
            done += len(window)
            write_json(progress, {"settings": settings, "done": done})
    del matrix
    if index.exists():  # a run killed between the two renames has moved it already
        os.replace(index, index_path(args.out))
    os.replace(vectors, args.out)
    progress.unlink()
    print(f"{total} vectors of {model.config.hidden_size} written to {args.out} (index: {index_path(args.out)})")
    return total
