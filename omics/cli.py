"""The `omics` command. Parses arguments, pins one GPU, and only then imports torch and the stage code.

    omics stage1|stage2|stage3 train    --data FILE [--eval-data FILE] [--config YAML] [--set key=value ...]
    omics stage1|stage2|stage3 evaluate --data FILE [...]
    omics synthesize --data FILE --out FILE --base-url URL --model NAME   (Stage 3 data from a teacher)
    omics pairs --model DIR ...; omics dpo|grpo train|evaluate --data FILE (preference and RL tuning)
    omics score --predictions FILE        omics compare --stages 2 3 dpo
    omics generate | chat | serve --model DIR   omics embed | variant-effect --model DIR --data FILE
    omics vocab build --data FILE --out DIR     omics demo (the whole pipeline on a tiny model and bundled data)
"""

from __future__ import annotations

import argparse
import copy
import importlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from omics import paths
from omics.device import DTYPES, optional_features, pin_one_gpu, use_cuda
from omics.errors import UserError, os_error_line
from omics.stages import DIRECT_ANSWER_TOKENS, STAGES, Stage, registered

log = logging.getLogger("omics")
# libraries whose notices (deprecations, tokenizer settings, optional kernels that failed to load) only --verbose shows;
# torch's own logging resets the "torch" logger's level when imported, not its children's
THIRD_PARTY_LOGGERS = ("transformers", "torchao", "torch.utils._pytree", "peft", "accelerate", "datasets")
STAGE_EXAMPLES = {  # one example per --help; a stage without one gets the plain form
    ("stage1", "train"): "omics stage1 train --data seqs.txt --eval-data heldout.txt",
    ("stage2", "train"): "omics stage2 train --data train.jsonl --eval-data val.jsonl --set learning_rate=5e-5",
    ("stage3", "train"): "omics stage3 train --data reasoning.jsonl --replay-data train.jsonl --eval-data val.jsonl",
    ("stage1", "evaluate"): "omics stage1 evaluate --data heldout.txt",
    ("stage2", "evaluate"): "omics stage2 evaluate --data test.jsonl --train-data train.jsonl --max-samples 100",
    ("stage3", "evaluate"): "omics stage3 evaluate --data test.jsonl --mode both",
    ("dpo", "train"): "omics dpo train --data pairs.jsonl --eval-data val_pairs.jsonl --set dpo_beta=0.1",
    ("dpo", "evaluate"): "omics dpo evaluate --data test.jsonl --max-samples 100",
    ("grpo", "train"): "omics grpo train --data train.jsonl --set num_generations=8",
    ("grpo", "evaluate"): "omics grpo evaluate --data test.jsonl",
}
BACKEND_HELP = "auto = vLLM when installed and on a GPU, else HF transformers"
BATCH_TOKENS_HELP = "tokens (prompt + answer) per batch; default 65536 on a GPU, 8192 on CPU; lower it on OOM"


def stage_example(stage: Stage, action: str) -> str:
    return STAGE_EXAMPLES.get((stage.name, action), f"omics {stage.name} {action} --data FILE")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """`--help` with each option's default (unless its text states it) and examples kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == [] or action.default == ""
        if not action.option_strings or unset or action.default is argparse.SUPPRESS or "default" in text:
            return text
        return f"{text} (default: %(default)s)".lstrip()

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and self._get_help_string(action):  # an option without help text still shows its default
            action = copy.copy(action)
            action.help = self._get_help_string(action)
        return super()._format_action(action)


def help_texts(example: str) -> dict[str, Any]:
    """`add_parser` keywords for a command's `--help`: its options' defaults and one example command."""
    return {"formatter_class": HelpFormatter, "epilog": f"example:\n  {example}"}


class VersionAction(argparse.Action):
    """`--version`, computed only when asked (it runs git)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the omics version (and git commit in a checkout) and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from omics.version import version_line

        print(version_line())
        parser.exit()


def quiet_third_party(verbose: bool) -> None:
    """Libraries' own notices are theirs to act on, not the user's: shown with --verbose only."""
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if verbose else logging.ERROR)
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # transformers resets its level to it when imported
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1 (examples to show, samples to draw)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give a number of at least 1")
    return value


def _dtype(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="weights: auto = bf16 on GPUs that have it, else fp16; fp32 on CPU")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpu", type=int, default=0, help="index of the one GPU to use (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing results of this command")


def _streaming(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-length", type=int,
                        help="shorten prompts to N tokens as training did (default: the model's training max_length)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from the rows written")


def _train_parser(sub, stage: Stage) -> None:
    p = sub.add_parser("train", help=f"train {stage.title} ({stage.summary})",
                       **help_texts(stage_example(stage, "train")))
    p.add_argument("--data", type=Path, required=True, help="training file")
    p.add_argument("--eval-data", type=Path, help="held-out file: periodic eval loss and (Stages 2-3) generated "
                   "answers scored, the best checkpoint kept (best_model_metric)")
    for extra in stage.extra_data:
        p.add_argument(f"--{extra.name}-data", type=Path, help=extra.help)
    p.add_argument("--config", type=Path, default=stage.config)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set learning_rate=5e-5")
    starts = f"the first trained of {', '.join(stage.starts_from)}" if isinstance(stage.starts_from, tuple) else None
    p.add_argument("--base-model", type=Path, default=stage.base_model,
                   help=f"the model it starts from (default: {starts}, now {stage.base_model})" if starts else None)
    p.add_argument("--output-dir", type=Path, default=stage.model_dir)
    p.add_argument("--metrics-dir", type=Path, default=stage.metrics_dir)
    p.add_argument("--cache-dir", type=Path, help=f"tokenised-data cache (default: {paths.CACHE} beside --output-dir)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    if stage.trainer is None:  # the dry run shows the shared trainer's examples; a stage's own loop has none
        p.add_argument("--dry-run", type=count, nargs="?", const=3, metavar="N", help="train nothing, write nothing: "
                       "show N (default 3) examples as trained, the lengths, packing, steps, parameters and memory")
    _common(p)


def _evaluate_parser(sub, stage: Stage) -> None:
    p = sub.add_parser("evaluate", help=f"evaluate the {stage.title} model",
                       **help_texts(stage_example(stage, "evaluate")))
    p.add_argument("--data", type=Path, required=True, help="held-out / test file")
    p.add_argument("--model", type=Path, default=stage.model_dir)
    p.add_argument("--metrics-dir", type=Path, default=stage.metrics_dir)
    p.add_argument("--batch-tokens", type=int, help=BATCH_TOKENS_HELP)
    if stage.evaluation == "likelihood":
        p.add_argument("--base-model", type=Path, help="model to compare with (default: the one trained from)")
    else:
        p.add_argument("--train-data", type=Path,
                       help="training file: label ranges and class names (default: the model's omics_model.json)")
        p.add_argument("--max-samples", type=int, help="evaluate at most N examples per task")
        p.add_argument("--max-new-tokens", type=int, help=f"answer length limit (default {stage.max_new_tokens}"
                       + (f"; {DIRECT_ANSWER_TOKENS} in {stage.modes[1]} mode)" if len(stage.modes) > 1 else ")"))
        if len(stage.modes) > 1:
            p.add_argument("--mode", choices=[*stage.modes, "both"], default=stage.modes[0],
                           help=f"{stage.modes[0]}: as trained for it (results in --metrics-dir); {stage.modes[1]}: "
                                f"as Stage 2 (results in --metrics-dir/{stage.modes[1]}); both: each, and modes.md")
        p.add_argument("--backend", choices=["auto", "hf", "vllm"], default="auto", help=BACKEND_HELP)
        _streaming(p)
    _dtype(p)
    _common(p)


def _synthesize_parser(commands) -> None:
    p = commands.add_parser("synthesize", help="Stage 3 reasoning data from Stage 2 data, by a teacher model (OpenAI "
                            "API)", **help_texts("omics synthesize --data train.jsonl --out reasoning.jsonl --base-url "
                                                 "https://api.openai.com/v1 --model gpt-4o-mini --per-task 500"))
    p.add_argument("--data", type=Path, required=True, help="Stage 2 .jsonl (input, output, label, task)")
    p.add_argument("--out", type=Path, required=True,
                   help="Stage 3 .jsonl, appended as lines finish (OUT.rejected.jsonl and OUT.summary.json beside it)")
    p.add_argument("--base-url", required=True,
                   help="OpenAI-compatible API, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True, help="the teacher's model name at that API")
    p.add_argument("--per-task", type=int, help="stratified sample: N lines of each task (default: every line)")
    p.add_argument("--limit", type=int, help="at most N lines in all (raise it later to continue the same selection)")
    p.add_argument("--seed", type=int, default=0, help="of the sample and the backoff jitter")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable with the key, else read from ./.env; neither: a key-less server")
    p.add_argument("--prompt-template", type=Path,
                   help="prompt file using {input} and {output} (also {label}, {task}); default: the built-in one")
    p.add_argument("--rpm", type=int, help="requests per minute (default: no limit)")
    p.add_argument("--tpm", type=int, default=200_000, help="tokens per minute, 0 for no limit")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    p.add_argument("--max-retries", type=int, default=2, help="asks again, with the reason, after a rejected reply")
    p.add_argument("--api-retries", type=int, default=6,
                   help="retries after a 429, 5xx, timeout or lost connection (exponential backoff, Retry-After)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--max-tokens", type=int, default=1024, help="reply length limit, in tokens")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--price-per-million-input", type=float, metavar="USD", help="prints the cost (and in the summary)")
    p.add_argument("--price-per-million-output", type=float, metavar="USD")
    p.add_argument("--overwrite", action="store_true", help="start again, replacing an earlier synthesis in --out")


def _serve_parser(commands) -> None:
    serve = commands.add_parser("serve", help="OpenAI-compatible API server for a model folder (vLLM or built-in)",
                                **help_texts("omics serve --model archive/models/stage2 --api-key-env OMICS_API_KEY"))
    serve.add_argument("--model", type=Path, required=True, help="a model folder (omics-saved, or any HF folder)")
    serve.add_argument("--served-model-name", help="the name clients ask for (default: the model folder's name)")
    serve.add_argument("--mode", choices=["reasoning", "direct"], help="system prompt of requests without one "
                       "(default: reasoning for a reasoning model, i.e. Stage 3, else direct)")
    serve.add_argument("--backend", choices=["auto", "vllm", "transformers"], default="auto",
                       help="auto = vLLM's server when installed and on a GPU, else the built-in one (transformers)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key-env", metavar="NAME",
                       help="require 'Authorization: Bearer KEY', KEY read from this environment variable")
    serve.add_argument("--max-new-tokens", type=int, default=512, help="answer length of requests without max_tokens")
    serve.add_argument("--max-batch", type=int, default=16, help="built-in server: requests decoded together")
    serve.add_argument("--batch-tokens", type=int, help="built-in server: " + BATCH_TOKENS_HELP)
    serve.add_argument("--batch-window-ms", type=int, default=20,
                       help="built-in server: how long a batch waits for more requests after its first")
    serve.add_argument("--gpu", type=int, default=0, help="index of the one GPU to use (default 0)")
    _dtype(serve)


def _sequence_tools_parser(commands) -> None:
    """`omics embed` and `omics variant-effect`: what a model makes of the sequences themselves."""
    embed = commands.add_parser("embed", help="one vector per sequence (.txt or FASTA) into a .npy + index",
                                **help_texts("omics embed --model archive/models/stage1 --data seqs.fa "
                                             "--out vectors.npy --layer -1 --pool mean"))
    variants = commands.add_parser("variant-effect", help="zero-shot variant scores: alt vs ref log-likelihood",
                                   **help_texts("omics variant-effect --model archive/models/stage1 "
                                                "--data variants.tsv --out scores.tsv --window 128"))
    for parser_, data_help in ((embed, "sequences: .txt (one per line) or FASTA (ids from the headers)"),
                               (variants, "TSV with a header: pos, ref, alt and either sequence or fasta + chrom")):
        parser_.add_argument("--model", type=Path, required=True, help="a model folder (e.g. archive/models/stage1)")
        parser_.add_argument("--data", type=Path, required=True, help=data_help)
    embed.add_argument("--out", type=Path, required=True, help="vectors .npy (float32); the index beside it as "
                       ".index.tsv (row, id, line, length, molecule)")
    embed.add_argument("--layer", type=int, default=-1, help="hidden states of layer L: 0 = embeddings, "
                       "-1 = the last (after the final norm); negative counts from the end")
    embed.add_argument("--pool", choices=["mean", "last"], default="mean",
                       help="mean over the sequence's tokens (no BOS), or its last token")
    embed.add_argument("--max-length", type=int, help="tokens per chunk (BOS included); longer sequences are cut "
                       "into chunks and averaged (default: the model's training max_length, else 2048)")
    embed.add_argument("--resume", action="store_true", help="continue an interrupted run from the rows written")
    variants.add_argument("--out", type=Path, required=True, help="scores TSV: the input columns + window, "
                          "ref_ll, alt_ll, llr = alt_ll - ref_ll (natural log; > 0: the model prefers alt)")
    variants.add_argument("--window", type=int, default=128,
                          help="bases of context: window/2 on each side of the allele (clipped at the ends)")
    for parser_ in (embed, variants):
        parser_.add_argument("--batch-tokens", type=int,
                             help="padded tokens per batch; default 65536 on a GPU, 8192 on CPU; lower it on OOM")
        _dtype(parser_)
        _common(parser_)


def _pairs_parser(commands) -> None:
    p = commands.add_parser("pairs", help="preference pairs for omics dpo: K sampled answers per question, scored "
                            "against the label", **help_texts(
                                "omics pairs --model archive/models/stage2 --data train.jsonl --out pairs.jsonl"))
    p.add_argument("--model", type=Path, required=True, help="the model to sample (e.g. archive/models/stage2)")
    p.add_argument("--data", type=Path, required=True, help="questions with known labels (Stage 2 .jsonl)")
    p.add_argument("--out", type=Path, required=True, help="pairs .jsonl (+ OUT.report.json), written when complete")
    p.add_argument("--samples", type=int, default=4, help="answers sampled per question (K)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--seed", type=int, default=0, help="sampling seed: the same seed, the same pairs")
    p.add_argument("--max-samples", type=int, help="use at most N questions (after --per-task)")
    p.add_argument("--per-task", type=int, help="use at most N questions per task")
    p.add_argument("--max-new-tokens", type=int, help="answer length limit (default: as the model is evaluated, "
                   f"{DIRECT_ANSWER_TOKENS}; a reasoning model's reasoning budget)")
    p.add_argument("--train-data", type=Path,
                   help="training file: label ranges and class names (default: the model's omics_model.json)")
    p.add_argument("--backend", choices=["auto", "hf", "vllm"], default="auto", help=BACKEND_HELP)
    p.add_argument("--batch-tokens", type=int, help=BATCH_TOKENS_HELP)
    _dtype(p)
    _common(p)


def _vocab_parser(commands) -> None:
    vocab = commands.add_parser("vocab", help="a sequence vocabulary for Stage 1 (new base model folder)",
                                **help_texts("omics vocab build --data seqs.txt --out archive/models/base-vocab"))
    build = vocab.add_subparsers(dest="action", required=True).add_parser(
        "build", help="learn DNA/RNA and protein merges on a Stage 1 file; write the resized base model",
        **help_texts("omics vocab build --data seqs.txt --eval-data heldout.txt --out archive/models/base-vocab"))
    build.add_argument("--data", type=Path, required=True, help="the Stage 1 training file (sequences)")
    build.add_argument("--out", type=Path, required=True, help="the new base model folder (for --base-model)")
    build.add_argument("--base-model", type=Path, default=STAGES["stage1"].base_model)
    build.add_argument("--dna", type=int, default=4096, help="new tokens learned on DNA and RNA lines")
    build.add_argument("--protein", type=int, default=4096, help="new tokens learned on protein lines")
    build.add_argument("--sample-mb", type=float, default=64.0,
                       help="learn on about this much of --data, sampled evenly (a tenth held out to measure)")
    build.add_argument("--eval-data", type=Path, help="held-out sequence file: residues per token measured on it")
    build.add_argument("--stage2-data", type=Path, help="Stage 2 .jsonl: its tokens before and after measured")
    build.add_argument("--overwrite", action="store_true", help="replace an earlier vocabulary in --out")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omics", description=__doc__, **help_texts(
        "omics stage2 train --data train.jsonl   (omics COMMAND --help: its options)"))
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug messages, and the libraries' own notices and warnings")
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error, not one line")
    parser.add_argument("--root", type=Path, default=paths.DEFAULT_ARCHIVE,
                        help="the folder holding models/ and metrics/: every default model, metrics and "
                             "comparison folder is under it (e.g. --root archive/demo for the demo's)")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, stage in registered().items():
        stage_parser = commands.add_parser(name, help=f"{stage.title} train / evaluate: {stage.summary}",
                                           **help_texts(stage_example(stage, "train")))
        sub = stage_parser.add_subparsers(dest="action", required=True)
        _train_parser(sub, stage)
        _evaluate_parser(sub, stage)
    score = commands.add_parser("score", help="score anyone's answers (no model, no GPU, no torch)", **help_texts(
        "omics score --predictions archive/metrics/stage2/predictions.jsonl --train-data train.jsonl"))
    score.add_argument("--predictions", type=Path, required=True,
                       help="our predictions.jsonl, or the paper evaluator's .jsonl (task, label, model_output|result)")
    score.add_argument("--train-data", type=Path, help="training file: ranges, class and EC vocabularies, baselines")
    score.add_argument("--model", type=Path,
                       help="model folder whose omics_model.json gives the training label summary (no model loaded)")
    score.add_argument("--out", type=Path, help="directory for metrics.json/metrics.md (default: print only)")
    score.add_argument("--overwrite", action="store_true", help="replace results in --out")
    compare = commands.add_parser("compare", help="per-task deltas between evaluated stages",
                                  **help_texts("omics compare --stages 2 3"))
    compare.add_argument("--stages", nargs="+", metavar="STAGE",
                         help="stage numbers or names (2 3 dpo); default: every stage with a metrics.json")
    compare.add_argument("--out", type=Path, help="folder for comparison.md/.html (default: --metrics-root)")
    compare.add_argument("--overwrite", action="store_true", help="replace an earlier comparison.md/.html")
    compare.add_argument("--metrics-root", type=Path, default=paths.ARCHIVE / "metrics",
                         help="folder holding stageN/metrics.json")
    generate = commands.add_parser("generate", help="answer the questions of a .jsonl/.csv/.xlsx file", **help_texts(
        "omics generate --model archive/models/stage2 --data questions.jsonl --out answers.jsonl"))
    generate.add_argument("--model", type=Path, required=True, help="a trained model folder")
    generate.add_argument("--data", type=Path, required=True, help="rows with 'input' (+ optional system, task)")
    generate.add_argument("--out", type=Path, required=True, help="output file: .jsonl, .csv or .xlsx")
    generate.add_argument("--train-data", type=Path, help="training file: lets a row's task be parsed")
    generate.add_argument("--backend", choices=["auto", "hf", "vllm"], default="auto", help=BACKEND_HELP)
    generate.add_argument("--max-new-tokens", type=int, default=512, help="answer length limit, in tokens")
    generate.add_argument("--batch-tokens", type=int, help=BATCH_TOKENS_HELP)
    _dtype(generate)
    _streaming(generate)
    _common(generate)
    chat = commands.add_parser("chat", help="interactive session with a trained model (streams tokens)",
                               **help_texts("omics chat --model archive/models/stage3"))
    chat.add_argument("--model", type=Path, default=paths.model_dir(2), help="a trained model folder")
    chat.add_argument("--system", help="system prompt (default: the one the model was trained with)")
    chat.add_argument("--max-new-tokens", type=int, default=512, help="answer length limit, in tokens")
    chat.add_argument("--gpu", type=int, default=0, help="index of the one GPU to use (default 0)")
    _dtype(chat)
    bench = commands.add_parser("bench", help="speed benchmarks (results JSON under benchmarks/results)",
                                **help_texts("omics bench train --shape tiny --stages 2"))
    bench_kind = bench.add_subparsers(dest="kind", required=True)
    train_bench = bench_kind.add_parser("train", help="training throughput: naive baseline vs our trainer",
                                        **help_texts("omics bench train --shape 8b --layers 4 --cap-gb 48"))
    train_bench.add_argument("--shape", choices=["8b", "tiny"], default="tiny")
    train_bench.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3])
    train_bench.add_argument("--max-length", type=int, default=1024)
    train_bench.add_argument("--micro-batch-size", type=int, default=4)
    train_bench.add_argument("--steps", type=int, default=3, help="measured steps per path (after 1 warm-up)")
    train_bench.add_argument("--examples", type=int, default=200)
    train_bench.add_argument("--cap-gb", type=float, help="cap GPU memory, e.g. 48 to answer 'fits an L40S?'")
    train_bench.add_argument("--attn", nargs="+", default=["sdpa"],
                             help="attention implementations to measure our path with (sdpa, flex_attention, eager)")
    train_bench.add_argument("--find-max-batch", action="store_true",
                             help="GPU: also report the largest micro-batch that fits (under --cap-gb)")
    train_bench.add_argument("--layers", type=int, help="decoder layers of the shape (default: all, 32 for 8b)")
    train_bench.add_argument("--stage-paths", action="store_true",
                             help="one step of each stage's shipped config, then save, merge and reload")
    train_bench.add_argument("--out", type=Path, default=Path("benchmarks/results/train.json"))
    eval_bench = bench_kind.add_parser("eval", help="generation throughput: HF naive vs HF fast (vs vLLM)",
                                       **help_texts("omics bench eval --shape tiny --prompts 8"))
    eval_bench.add_argument("--shape", choices=["8b", "tiny"], default="tiny")
    eval_bench.add_argument("--prompts", type=int, default=32)
    eval_bench.add_argument("--answer-tokens", type=int, nargs="+", default=[32, 256],
                            help="forced answer lengths (Stage-2-like, Stage-3-like)")
    eval_bench.add_argument("--batch-tokens", type=int, default=65536)
    eval_bench.add_argument("--out", type=Path, default=Path("benchmarks/results/eval.json"))
    memory_bench = bench_kind.add_parser("memory", help="peak GPU memory of each stage's step, traced without a GPU",
                                         **help_texts("omics bench memory --shape 8b --stages 3"))
    memory_bench.add_argument("--shape", choices=["8b", "tiny"], default="8b")
    memory_bench.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3])
    memory_bench.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                              help="override a key of every stage's default config (repeatable)")
    memory_bench.add_argument("--layers", type=int, help="decoder layers of the shape (default: all, 32 for 8b)")
    memory_bench.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    memory_bench.add_argument("--budget-gib", type=float, default=43.2, help="what must fit (48 GiB less 10%%)")
    memory_bench.add_argument("--no-validate", dest="validate", action="store_false",
                              help="skip checking the tracer against the CPU allocator at the tiny shape")
    memory_bench.add_argument("--out", type=Path, default=Path("benchmarks/results/memory.json"))
    eval_memory = bench_kind.add_parser("eval-memory", help="evaluation host memory from 1k to 50k examples",
                                        **help_texts("omics bench eval-memory --examples 1000 5000"))
    eval_memory.add_argument("--examples", type=int, nargs="+", default=[1000, 5000, 20000, 50000])
    eval_memory.add_argument("--answers", nargs="+", choices=["short", "reasoning"], default=["short", "reasoning"])
    eval_memory.add_argument("--real", type=int, nargs="+", default=[1000, 100],
                             help="per --answers kind, examples also decoded by the tiny model for real (0: skip)")
    eval_memory.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_memory.json"))
    for parser_ in (train_bench, eval_bench):
        parser_.add_argument("--gpu", type=int, default=0, help="index of the one GPU to use (default 0)")
        _dtype(parser_)
    _synthesize_parser(commands)
    _serve_parser(commands)
    _sequence_tools_parser(commands)
    _pairs_parser(commands)
    _vocab_parser(commands)
    demo = commands.add_parser("demo", help="run all stages on a tiny model and the bundled samples",
                               **help_texts("omics demo --workdir /tmp/omics-demo"))
    demo.add_argument("--workdir", type=Path, default=Path("archive/demo"), help="where its models and results go")
    _common(demo)
    return parser


def evaluate(stage: Stage, args: argparse.Namespace) -> dict:
    """`omics stageN evaluate`: the likelihood of held-out sequences, or generated answers scored."""
    if stage.evaluation == "likelihood":
        from omics.stage1.evaluate import run  # the likelihood evaluation, any raw-sequence stage's

        return run(args)
    from omics.evaluate.run import evaluate_stage

    return evaluate_stage(stage, args)


INPUT_FILES = ("predictions", "config", "prompt_template")  # read by a command, besides every --*-data file


def check_input_files(args: argparse.Namespace) -> None:
    """Every input file named on the command line exists, checked before anything loads: one message for every
    command, naming the option."""
    for name, value in vars(args).items():
        if isinstance(value, Path) and (name == "data" or name.endswith("_data") or name in INPUT_FILES):
            option = "--" + name.replace("_", "-")
            if value.is_dir():
                raise UserError(f"{option} {value} is a folder, not a file; pass a file")
            if not value.exists():
                raise UserError(f"{option} {value}: no such file; check the path")


def use_root(argv: list[str] | None) -> None:
    """`--root DIR` moves every default under DIR: set before the parser computes its defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--root", type=Path, default=paths.DEFAULT_ARCHIVE)
    paths.ARCHIVE = pre.parse_known_args(argv)[0].root


def main(argv: list[str] | None = None) -> int:
    use_root(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")  # omics, or the library
    quiet_third_party(args.verbose)
    try:
        check_input_files(args)
        if hasattr(args, "gpu"):
            pinned = pin_one_gpu(args.gpu)
            if use_cuda():  # without CUDA there is no GPU to pin: the next line says CPU
                log.info("one-GPU rule: CUDA_VISIBLE_DEVICES=%s (--gpu N picks another)", pinned)
            log.info("%s", optional_features())
        from omics.runs import hold_command  # one process per run folder, only omics' files replaced

        stage = STAGES.get(args.command)
        with hold_command(args, *((stage.evaluation, stage.modes) if stage else ())):
            if stage and args.action == "train":
                from omics.train import RunArgs, train  # each stage only states what differs

                log.info("%s train starts from %s", stage.name, args.base_model)
                if getattr(args, "dry_run", None) is not None:
                    from omics.dryrun import dry_run  # read-only: no run folder is created, locked or checked

                    dry_run(stage, RunArgs.from_cli(args, stage))
                else:
                    (stage.trainer or train)(stage, RunArgs.from_cli(args, stage))
            elif stage:
                evaluate(stage, args)
            elif args.command == "bench":
                importlib.import_module(f"omics.bench.{args.kind.replace('-', '_')}").run(args)
            else:
                importlib.import_module(f"omics.commands.{args.command.replace('-', '_')}").run(args)
    except (UserError, OSError) as err:  # what a user can act on: one line; any other exception is a bug
        log.error("%s", os_error_line(err) if isinstance(err, OSError) else err, exc_info=args.debug)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
