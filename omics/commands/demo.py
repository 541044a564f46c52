"""`omics demo`: the whole pipeline — three stages, train + evaluate each, then the comparison — on a tiny
Llama built on the real Llama-3 tokenizer and the bundled samples. Minutes on a CPU; nothing downloaded."""

from __future__ import annotations

import json
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


def learning_checks(metrics: Path) -> str:
    """What the demo must show beyond running: Stage 3 answers in its format when asked to reason, and asked
    directly it keeps Stage 2's score (no forgetting)."""
    def results(folder: str) -> dict:
        return json.loads((metrics / folder / "metrics.json").read_text())

    stage2, reasoning, direct = results("stage2")["overall"], results("stage3")["tasks"], results("stage3/direct")[
        "overall"]
    compliance = sum(t["format_compliance"] * t["n"] for t in reasoning.values()) / sum(
        t["n"] for t in reasoning.values())
    change = direct["mixed_score_mean"] - stage2["mixed_score_mean"]
    per_task = ", ".join(f"{task} {t['format_compliance']:.0f}%" for task, t in reasoning.items())
    return (f"Stage 3, reasoning mode: {compliance:.1f}% of the answers in the <reasoning>…</reasoning> "
            f"<answer>…</answer> format (target ≥ 90%; {per_task})\n"
            f"Stage 3, direct mode: mean Mixed Score {direct['mixed_score_mean']:.2f} against Stage 2's "
            f"{stage2['mixed_score_mean']:.2f} ({change:+.2f}; target: no more than 1 point below)")


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
    print(f"\n{learning_checks(metrics)}")
    reports = [p for p in (*(metrics / s / "report.html" for s in ("stage1", "stage2", "stage3")),
                           metrics / "comparison.html") if p.is_file()]
    print("\nreports (open in a browser):", *reports, sep="\n  ")
    print("plots (PNG):", *(p.parent / "plots" for p in reports), sep="\n  ")
