"""Stage 1 evaluate: held-out perplexity and bits per residue, trained model vs the model it started from."""

from __future__ import annotations

import json
import sys
from argparse import Namespace
from pathlib import Path

from omics.cli import main


def run(args: Namespace) -> dict:
    from omics.config import load_config
    from omics.data.packing import cache_key, file_sha256, model_fingerprint
    from omics.evaluate.html_report import write_report
    from omics.evaluate.likelihood import format_likelihood_table, sequence_likelihood
    from omics.evaluate.report import log_scalars
    from omics.io import ensure_writable, write_json, write_text
    from omics.model import require_model_dir
    from omics.model_card import read_card
    from omics.stage1.train import STAGE

    out = args.metrics_dir / "likelihood.json"
    ensure_writable(out, args.overwrite)
    model = require_model_dir(args.model, "Train it first: omics stage1 train --data FILE, or pass --model DIR.")
    card = read_card(model)  # a folder without one: Stage 1's default config and base model
    config = card.config or load_config(STAGE.config).to_dict()
    base = require_model_dir(args.base_model or (card.base_model or {}).get("path") or STAGE.base_model,
                             "Pass --base-model DIR (the model Stage 1 started from).")
    settings = {"max_length": config["max_length"], "wrap_tags": config["wrap_tags"], "dtype": args.dtype}
    data_sha = file_sha256(args.data)

    base_key = cache_key(model=str(Path(base).resolve()), weights=model_fingerprint(base), data=data_sha, **settings)
    base_cache = args.metrics_dir / "likelihood_base_cache.json"
    cached = json.loads(base_cache.read_text()) if base_cache.is_file() else {}
    if cached.get("key") != base_key:
        cached = {"key": base_key, "model": str(base),
                  "results": sequence_likelihood(base, args.data, **settings, batch_tokens=args.batch_tokens)}
        write_json(base_cache, cached)
    results = {"trained": sequence_likelihood(model, args.data, **settings, batch_tokens=args.batch_tokens),
               "base": cached["results"]}

    doc = {"meta": {"data": str(Path(args.data).resolve()), "data_sha256": data_sha, "model": str(model),
                    "base_model": str(base), **settings}, "results": results}
    write_json(out, doc)
    log_scalars(args.metrics_dir, {f"likelihood/{name}/{molecule}": values
                                   for name, per in results.items() for molecule, values in per.items()},
                tag="stage1-likelihood")
    table = format_likelihood_table(results)
    write_text(args.metrics_dir / "likelihood.md", f"# Stage 1 held-out likelihood\n\n{table}\n")
    print(table)
    write_report(args.metrics_dir)
    return doc


if __name__ == "__main__":
    sys.exit(main(["stage1", "evaluate", *sys.argv[1:]]))
