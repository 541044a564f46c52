"""`omics bench eval-memory`: host memory of a Stages 2-3 evaluation as the number of examples grows.

Each point is a fresh process running the real `evaluate_generation` (streamed reading, prompt ids, rows
appended, true-class probability, scoring from the file) on a file of N examples cycled from the bundled
test set. Answers come from `FixedAnswers` (a fixed text with top-20 log-probabilities for every token,
as HF generation returns them) so 50k examples take minutes on a CPU; `--real N M` also decodes N short and
M reasoning examples with the tiny model (~1 minute per 18 reasoning answers on 2 CPU cores). Short answers
are Stage-2-like; reasoning answers are ~300 tokens (Stage 3).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from itertools import cycle, islice
from pathlib import Path

import numpy as np
import torch

from omics.errors import UserError
from omics.evaluate.generate import TOP_LOGPROBS, Generation, TopLogprobs

ANSWERS = {
    "short": "The sequence is positive.",
    "reasoning": "<reasoning>" + " The sequence shows the motif again." * 42 + "</reasoning> <answer>positive</answer>",
}
BATCH = 64


class FixedAnswers:
    """A backend answering every prompt with one fixed text, log-probabilities included, batch by batch."""

    name = "fixed"

    def __init__(self, tokenizer, text: str):
        self.tokenizer, self.text = tokenizer, text
        self.ids = tokenizer(text, add_special_tokens=False)["input_ids"]

    def stream(self, prompt_ids: list[np.ndarray]):
        steps = len(self.ids)
        for start in range(0, len(prompt_ids), BATCH):
            n = min(BATCH, len(prompt_ids) - start)
            indices = (torch.tensor(self.ids, dtype=torch.int32)[:, None] + torch.arange(TOP_LOGPROBS)).expand(
                n, steps, TOP_LOGPROBS).contiguous()
            values = torch.full((n, steps, TOP_LOGPROBS), -8.0)
            values[..., 0] = -0.05
            yield [(start + i, Generation(self.text, list(self.ids), TopLogprobs(indices[i], values[i])))
                   for i in range(n)]


def _status_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB (Linux)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 1024


def _reset_peak() -> None:
    """Start the peak RSS over from the current RSS: the import-time peak would hide the evaluation's."""
    Path("/proc/self/clear_refs").write_text("5")


def measure(model_dir: Path, work: Path, examples: int, answer: str, real: bool) -> dict:
    """One evaluation in this process: peak RSS before and after, seconds."""
    from omics.evaluate.generate import HFBackend
    from omics.evaluate.run import evaluate_generation
    from omics.model import load_tokenizer
    from omics.paths import SAMPLES
    from omics.stages import stage

    data = work / f"test-{examples}.jsonl"
    with (SAMPLES / "stage2_test.jsonl").open(encoding="utf-8") as source:
        data.write_text("".join(islice(cycle(source.readlines()), examples)), encoding="utf-8")
    reasoning = answer == "reasoning"
    new_tokens = 300 if reasoning else 16
    if real:
        backend = HFBackend.load(model_dir, new_tokens, 8192)
        backend.min_new_tokens = new_tokens
    else:
        backend = FixedAnswers(load_tokenizer(model_dir, chat=True), ANSWERS[answer])
    args = Namespace(metrics_dir=work / f"metrics-{examples}-{answer}-{real}", model=model_dir, data=data,
                     resume=False, overwrite=True, max_samples=None, max_length=1024, train_data=None,
                     backend="hf", max_new_tokens=new_tokens, batch_tokens=8192)
    _reset_peak()
    before = _status_mib("VmRSS")
    started = time.perf_counter()
    evaluate_generation(stage("stage3" if reasoning else "stage2"), args, backend=backend,
                        mode="reasoning" if reasoning else "direct")
    peak = _status_mib("VmHWM")
    return {"examples": examples, "answer": answer, "answer_tokens": new_tokens if real else len(backend.ids),
            "backend": "tiny model (real decoding)" if real else "fixed answers (real streaming/scoring path)",
            "peak_rss_mib": round(peak, 1), "rss_before_mib": round(before, 1),
            "held_mib": round(peak - before, 1), "seconds": round(time.perf_counter() - started, 1)}


def _point(model_dir: Path, work: Path, examples: int, answer: str, real: bool) -> dict:
    code = ("import json, sys; from pathlib import Path; from omics.bench.eval_memory import measure; "
            "print('RESULT ' + json.dumps(measure(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), "
            "sys.argv[4], sys.argv[5] == 'real')))")
    done = subprocess.run([sys.executable, "-c", code, str(model_dir), str(work), str(examples), answer,
                           "real" if real else "fixed"], capture_output=True, text=True, check=True)
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])


def run(args: Namespace) -> dict:
    from omics.device import describe
    from omics.tiny import build_tiny_llama
    from omics.train import versions

    if len(args.real) != len(args.answers):
        raise UserError(f"--real takes one count per --answers kind ({len(args.answers)}), got {args.real}")
    doc = {"benchmark": "eval-memory", "device": describe(), "versions": versions(),
           "settings": vars(args) | {"out": str(args.out)}, "results": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def record(point: dict) -> None:  # the JSON is rewritten after every point: a long run keeps what it measured
        doc["results"].append(point)
        args.out.write_text(json.dumps(doc, indent=2, default=str))
        print(json.dumps(point), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_llama(Path(tmp) / "tiny")
        for answer, real in zip(args.answers, args.real, strict=True):
            first = None
            for n in sorted(args.examples):
                point = _point(model_dir, Path(tmp), n, answer, real=False)
                first = first or point
                point["bytes_per_example_over_first"] = round(
                    (point["held_mib"] - first["held_mib"]) * 2**20 / max(n - first["examples"], 1))
                record(point)
            if real:
                record(_point(model_dir, Path(tmp), real, answer, real=True))
    results = doc["results"]
    print("| answers | examples | peak RSS MiB | held MiB | bytes/example over the first point | backend |\n"
          "|---|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['answer']} | {r['examples']} | {r['peak_rss_mib']} | {r['held_mib']} | "
              f"{r.get('bytes_per_example_over_first', '')} | {r['backend']} |")
    return doc
