"""`omics demo`: the whole pipeline — three stages, train + evaluate each, then the comparison — on a tiny
Llama built on the real Llama-3 tokenizer and the bundled samples. Minutes on a CPU; nothing downloaded."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
DEMO_CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs" / "demo"


def run(args: Namespace) -> None:
    from omics.cli import main
    from omics.tiny import build_tiny_llama

    work: Path = args.workdir  # held by the CLI, the previous demo set aside with --overwrite: omics.runs
    base = work / "base-model"
    if not (base / "config.json").is_file():
        build_tiny_llama(base)
    models, metrics = work / "models", work / "metrics"
    stage_test = str(SAMPLES / "stage2_test.jsonl")
    steps = [  # (command, the stage whose model and metrics folder it uses)
        (["stage1", "train", "--data", str(SAMPLES / "stage1_train.txt"),
          "--eval-data", str(SAMPLES / "stage1_heldout.txt"), "--base-model", str(base)], "stage1"),
        (["stage1", "evaluate", "--data", str(SAMPLES / "stage1_heldout.txt")], "stage1"),
        # the Stage 1 model answering the test questions: the "before" row of the comparison
        (["stage2", "evaluate", "--data", stage_test], "stage1"),
        (["stage2", "train", "--data", str(SAMPLES / "stage2_train.jsonl"), "--base-model", str(models / "stage1")],
         "stage2"),
        (["stage2", "evaluate", "--data", stage_test], "stage2"),
        (["stage3", "train", "--data", str(SAMPLES / "stage3_train.jsonl"),
          "--replay-data", str(SAMPLES / "stage2_train.jsonl"), "--base-model", str(models / "stage2")], "stage3"),
        (["stage3", "evaluate", "--data", stage_test], "stage3"),
    ]
    for step, stage in steps:
        where = ["--metrics-dir", str(metrics / stage)]
        if step[1] == "train":
            where += ["--output-dir", str(models / stage), "--config", str(DEMO_CONFIGS / f"{stage}.yaml")]
        else:
            where += ["--model", str(models / stage)]
        print(f"\n=== omics {' '.join(step[:2])} ({stage} model) ===", flush=True)
        if main([*step, *where, "--gpu", str(args.gpu)]) != 0:  # --overwrite: omics.runs.hold_demo
            raise SystemExit(f"demo stopped at: omics {' '.join(step)}")
    main(["compare", "--stages", "1", "2", "3", "--metrics-root", str(metrics)])
    reports = [p for p in (*(metrics / s / "report.html" for s in ("stage1", "stage2", "stage3")),
                           metrics / "comparison.html") if p.is_file()]
    print("\nreports (open in a browser):", *reports, sep="\n  ")
    print("plots (PNG):", *(p.parent / "plots" for p in reports), sep="\n  ")
