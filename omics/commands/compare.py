"""`omics compare --stages 2 3`: per-task Mixed Score and paper metric of each stage, and the paper table per
stage beside the paper's S12/S123 values, with deltas."""

from __future__ import annotations

from argparse import Namespace

from omics.errors import UserError


def run(args: Namespace) -> dict:
    from omics.evaluate.html_report import write_comparison_report
    from omics.evaluate.report import compare_files
    from omics.io import ensure_writable, write_text
    from omics.paths import stage_name
    from omics.stages import registered

    if not args.metrics_root.is_dir():
        raise UserError(f"--metrics-root {args.metrics_root}: no such folder; pass the folder holding the stages' "
                        "metrics (default archive/metrics, or --root DIR)")
    names = [stage_name(int(s)) if s.isdigit() else s for s in args.stages or ()] or [
        name for name in registered() if (args.metrics_root / name / "metrics.json").is_file()]
    found = {name: args.metrics_root / name / "metrics.json" for name in names}
    missing = [str(p) for p in found.values() if not p.is_file()]
    if missing:
        raise UserError(f"no evaluation results at {', '.join(missing)}: run omics STAGE evaluate first")
    for name in names:  # Stage 3 evaluated in direct mode too (--mode both|direct): its own column
        if (direct := args.metrics_root / name / "direct" / "metrics.json").is_file():
            found[f"{name} direct"] = direct
    if len(found) < 2:
        raise UserError(f"fewer than two evaluated stages under {args.metrics_root}: nothing to compare")
    out = args.out or args.metrics_root
    ensure_writable(out / "comparison.md", args.overwrite)
    warn_if_other_questions(found)
    table, docs = compare_files(found)
    print(table)
    write_text(out / "comparison.md", table + "\n")
    write_comparison_report(out, table, docs, args.metrics_root)
    return docs


def warn_if_other_questions(found: dict) -> None:
    """Deltas between results on different questions (another file, or a --max-samples share) mean little: say so."""
    import json
    import logging

    asked = {}
    for label, path in found.items():
        document = json.loads(path.read_text())
        asked[label] = (document["meta"].get("data_sha256"), document["overall"].get("n_examples"))
    if len(set(asked.values())) > 1:
        logging.getLogger("omics").warning(
            "these results answer different questions (%s): their deltas compare different test sets; evaluate "
            "every model on the same file without --max-samples", ", ".join(
                f"{label}: {n} of {str(sha)[:8]}" for label, (sha, n) in asked.items()))
