"""`omics demo`: the whole pipeline — three stages, train + evaluate each, then the comparison — on a tiny
Llama built on the real Llama-3 tokenizer and the bundled samples. Minutes on a CPU; nothing downloaded."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from omics.paths import DEMO_CONFIGS, SAMPLES


def steps(work: Path, gpu: int, samples: Path = SAMPLES) -> list[tuple[list[str], str]]:
    """The demo's commands in order, each with the stage whose model and metrics folder under `work` it uses, all
    on one GPU (pinned once per process: see device.pin_one_gpu), on the bundled `samples` or files named alike."""
    base, models, metrics = work / "base-model", work / "models", work / "metrics"
    stage_test = str(samples / "stage2_test.jsonl")
    valid = {stage: str(samples / f"{stage}_valid.jsonl") for stage in ("stage2", "stage3")}  # the curves
    commands = [  # (command, the stage whose model and metrics folder it uses)
        (["stage1", "train", "--data", str(samples / "stage1_train.txt"),
          "--eval-data", str(samples / "stage1_heldout.txt"), "--base-model", str(base)], "stage1"),
        (["stage1", "evaluate", "--data", str(samples / "stage1_heldout.txt")], "stage1"),
        # the Stage 1 model answering the test questions: the "before" row of the comparison
        (["stage2", "evaluate", "--data", stage_test], "stage1"),
        (["stage2", "train", "--data", str(samples / "stage2_train.jsonl"), "--eval-data", valid["stage2"],
          "--base-model", str(models / "stage1")], "stage2"),
        (["stage2", "evaluate", "--data", stage_test], "stage2"),
        (["stage3", "train", "--data", str(samples / "stage3_train.jsonl"),
          "--replay-data", str(samples / "stage2_train.jsonl"), "--eval-data", valid["stage3"],
          "--base-model", str(models / "stage2")], "stage3"),
        (["stage3", "evaluate", "--data", stage_test, "--mode", "both"], "stage3"),
    ]
    out = []
    for command, stage in commands:
        where = ["--metrics-dir", str(metrics / stage)]
        if command[1] == "train":
            where += ["--output-dir", str(models / stage), "--config", str(DEMO_CONFIGS / f"{stage}.yaml")]
        else:
            where += ["--model", str(models / stage)]
        out.append(([*command, *where, "--gpu", str(gpu)], stage))
    return out


def run(args: Namespace) -> None:
    from omics.cli import main
    from omics.tiny import build_tiny_llama

    work: Path = args.workdir  # held by the CLI, the previous demo set aside with --overwrite: omics.runs
    if not (work / "base-model" / "config.json").is_file():
        build_tiny_llama(work / "base-model")
    for step, stage in steps(work, args.gpu):
        print(f"\n=== omics {' '.join(step[:2])} ({stage} model) ===", flush=True)
        if main(step) != 0:  # --overwrite: omics.runs.hold_demo
            raise SystemExit(f"demo stopped at: omics {' '.join(step)}")
    metrics = work / "metrics"
    main(["compare", "--stages", "1", "2", "3", "--metrics-root", str(metrics)])
    reports = [p for p in (*(metrics / s / "report.html" for s in ("stage1", "stage2", "stage3")),
                           metrics / "comparison.html") if p.is_file()]
    print("\nreports (open in a browser):", *reports, sep="\n  ")
    print("plots (PNG):", *(p.parent / "plots" for p in reports), sep="\n  ")
