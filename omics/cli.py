"""The `omics` command. Parses arguments, pins one GPU, and only then imports torch and the stage code.

    omics stage1|stage2|stage3 train    --data FILE [--eval-data FILE] [--config YAML] [--set key=value ...]
    omics stage1|stage2|stage3 evaluate --data FILE [...]
    omics score --predictions FILE        omics compare --stages 2 3
    omics demo                            (the whole pipeline on a tiny model and bundled data)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from omics import paths
from omics.device import pin_one_gpu

log = logging.getLogger("omics")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpu", type=int, default=0, help="index of the one GPU to use (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing results of this command")


def _train_parser(sub, stage: int) -> None:
    p = sub.add_parser("train", help=f"train Stage {stage}")
    p.add_argument("--data", type=Path, required=True, help="training file")
    p.add_argument("--eval-data", type=Path, help="held-out file for periodic evaluation loss")
    if stage == 3:
        p.add_argument("--replay-data", type=Path, help="Stage 2 examples mixed back in against forgetting")
    p.add_argument("--config", type=Path, default=paths.default_config(stage))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set learning_rate=5e-5")
    p.add_argument("--base-model", type=Path, default=paths.default_base_model(stage))
    p.add_argument("--output-dir", type=Path, default=paths.model_dir(stage))
    p.add_argument("--metrics-dir", type=Path, default=paths.metrics_dir(stage))
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    _common(p)


def _evaluate_parser(sub, stage: int) -> None:
    p = sub.add_parser("evaluate", help=f"evaluate the Stage {stage} model")
    p.add_argument("--data", type=Path, required=True, help="held-out / test file")
    p.add_argument("--model", type=Path, default=paths.model_dir(stage))
    p.add_argument("--metrics-dir", type=Path, default=paths.metrics_dir(stage))
    p.add_argument("--batch-tokens", type=int, default=8192, help="tokens per forward batch (lower it on small GPUs)")
    if stage == 1:
        p.add_argument("--base-model", type=Path, help="model to compare with (default: the one trained from)")
    else:
        p.add_argument("--train-data", type=Path, help="training file: label ranges and class names")
        p.add_argument("--max-samples", type=int, help="evaluate at most N examples per task")
        p.add_argument("--max-new-tokens", type=int, default=64 if stage == 2 else 512)
        p.add_argument("--backend", choices=["auto", "hf", "vllm"], default="auto")
    _common(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    for stage in (1, 2, 3):
        stage_parser = commands.add_parser(f"stage{stage}", help=f"Stage {stage} train / evaluate")
        sub = stage_parser.add_subparsers(dest="action", required=True)
        _train_parser(sub, stage)
        _evaluate_parser(sub, stage)
    score = commands.add_parser("score", help="re-score a predictions file (no model, no GPU)")
    score.add_argument("--predictions", type=Path, required=True)
    score.add_argument("--train-data", type=Path, help="training file: label ranges and class names")
    score.add_argument("--out", type=Path, help="directory for metrics.json/metrics.md (default: print only)")
    score.add_argument("--overwrite", action="store_true", help="replace results in --out")
    compare = commands.add_parser("compare", help="per-task deltas between evaluated stages")
    compare.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3])
    compare.add_argument("--metrics-root", type=Path, default=paths.ARCHIVE / "metrics")
    demo = commands.add_parser("demo", help="run all stages on a tiny model and the bundled samples")
    demo.add_argument("--workdir", type=Path, default=Path("archive/demo"))
    _common(demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s omics: %(message)s", datefmt="%H:%M:%S")
    if hasattr(args, "gpu"):
        log.info("using GPU %s only (one-GPU rule; --gpu N picks another)", pin_one_gpu(args.gpu))
    try:
        if args.command.startswith("stage"):
            module = importlib.import_module(f"omics.{args.command}.{args.action}")
            module.run(args)
        else:
            importlib.import_module(f"omics.commands.{args.command}").run(args)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
