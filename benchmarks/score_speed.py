"""How long `omics score` takes on a test-split-sized file (244k lines, the paper evaluator's format) on one
CPU core, and how long `omics score --help` takes to start. Writes benchmarks/results/score-cpu.json.

    python benchmarks/score_speed.py [--lines 244000] [--out benchmarks/results/score-cpu.json]

The file is synthetic: every family of the paper table, answers and reference outputs in the dataset's
styles (some hedged, some wrong, some without a number), so parsing, the reference round trip, the
baselines and the pooled paper table all run as they would on the real test split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ["emp-H3", "emp-H4ac", "pd-prom_300_tata", "cpd-prom_core_notata", "cpd-prom_core_all", "tf-h-0", "tf-m-1",
          "antibody_antigen", "rna_protein_interaction", "promoter_enhancer_interaction", "Solubility-Solubility"]
REGRESSION = ["Isoform-Isoform", "MeanRibosomeLoading-MeanRibosomeLoading", "CRISPROnTarget-CRISPROnTarget",
              "Stability-Stability", "Fluorescence-Fluorescence", "Thermostability-Thermostability",
              "sirnaEfficiency-sirnaEfficiency"]
RNA_FAMILIES = ["5S_rRNA", "5_8S_rRNA", "tRNA", "ribozyme", "CD-box", "miRNA", "Intron_gpI", "Intron_gpII",
                "HACA-box", "riboswitch", "IRES", "leader", "scaRNA"]
MODIFICATIONS = ["AtoI", "m6Am", "m1A", "m5C", "m5U", "m6A", "m7G", "Psi", "Am", "Cm", "Gm", "Um"]
POSITIVE = ["Yes, the sequence shows clear evidence of it.", "The result is positive.", "Binding sites are present."]
NEGATIVE = ["No, there is no evidence of it.", "The sequence is not associated with it.", "Negative."]


def _binary(rng: random.Random, task: str) -> dict:
    label = rng.choice(["positive", "negative"])
    soluble = task.startswith("Solubility")
    words = (["The protein is soluble."], ["The protein is insoluble."]) if soluble else (POSITIVE, NEGATIVE)
    right = words[0] if label == "positive" else words[1]
    answer = rng.choice([*right, *right, *words[0], *words[1], "I don't know."])
    return {"label": label, "model_output": answer, "output": rng.choice(right)}


def _regression(rng: random.Random, task: str) -> dict:
    label = round(rng.uniform(0, 100), 2)
    answer = rng.choice([f"The predicted value is {label + rng.gauss(0, 10):.2f}.", f"{rng.uniform(0, 100):.1f}%",
                         "I cannot estimate it."])
    return {"label": label, "model_output": answer, "output": f"The value is {label:.2f}."}


def _multi(rng: random.Random, task: str) -> dict:
    keys = ["hk", "dev"] if task.startswith("enhancer") else ["ON", "OFF", "ON_OFF"]
    label = {k: round(rng.uniform(-2, 5), 3) for k in rng.sample(keys, len(keys))}
    stated = ", ".join(f"{k} {label[k] + rng.gauss(0, 1):.3f}" for k in keys)
    return {"label": label, "model_output": stated, "output": ", ".join(f"{k} {label[k]:.3f}" for k in keys)}


def _ncrna(rng: random.Random, task: str) -> dict:
    label = rng.choice(RNA_FAMILIES)
    answer = f"This RNA belongs to the {rng.choice([label, label, rng.choice(RNA_FAMILIES)])} family."
    return {"label": label, "model_output": answer, "output": f"The family is {label}."}


def _modification(rng: random.Random, task: str) -> dict:
    marks = rng.sample(MODIFICATIONS, rng.randint(0, 2))
    label = ",".join(marks) or "none"
    reference = f"The sequence carries {' and '.join(marks)} sites." if marks else "No modifications were detected."
    answer = rng.choice([reference, "No modifications were detected.", f"{rng.choice(MODIFICATIONS)} sites."])
    return {"label": label, "model_output": answer, "output": reference}


def _ec(rng: random.Random, task: str, vocabulary: list[str]) -> dict:
    label = ", ".join(f"EC {ec}" for ec in rng.sample(vocabulary, rng.randint(1, 2)))
    answer = f"The enzyme belongs to EC {rng.choice(vocabulary)} and EC 9.9.9.{rng.randint(1, 9)}."
    return {"label": label, "model_output": answer, "output": f"The EC numbers are {label}."}


def write_file(path: Path, lines: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    vocabulary = [f"{rng.randint(1, 7)}.{rng.randint(1, 20)}.{rng.randint(1, 30)}.{rng.randint(1, 200)}"
                  for _ in range(500)]
    makers = [(t, _binary) for t in BINARY] + [(t, _regression) for t in REGRESSION]
    makers += [("enhancer_activity-enhancer_activity", _multi),
               ("ProgrammableRNASwitches-ProgrammableRNASwitches", _multi),
               ("NoncodingRNAFamily-NoncodingRNAFamily", _ncrna), ("Modification-Modification", _modification),
               ("FunctionEC-FunctionEC", lambda r, t: _ec(r, t, vocabulary))]
    with path.open("w") as f:
        for i in range(lines):
            task, make = makers[i % len(makers)]
            row = {"task": task, "input": "<dna>ACGT<dna> question", **make(rng, task)}
            f.write(json.dumps(row) + "\n")


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one command; on a shared machine the CPU time is the honest figure."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=244_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/score-cpu.json")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    one_core = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    omics = [*one_core, sys.executable, "-m", "omics.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        answers = Path(tmp) / "answers.jsonl"
        write_file(answers, args.lines)
        help_wall, help_cpu = min(_timed([*omics, "score", "--help"], env) for _ in range(3))
        command = [*omics, "score", "--predictions", str(answers), "--out", str(Path(tmp) / "out")]
        score_wall, score_cpu = _timed(command, env)
        doc = json.loads((Path(tmp) / "out/metrics.json").read_text())
    result = {
        "benchmark": "score",
        "command": "omics score --predictions FILE --out DIR (paper evaluator's .jsonl format)",
        "lines": args.lines,
        "one_core": bool(one_core),
        "score_wall_seconds": round(score_wall, 2),
        "score_cpu_seconds": round(score_cpu, 2),
        "lines_per_cpu_second": round(args.lines / score_cpu),
        "help_wall_seconds": round(help_wall, 3),
        "help_cpu_seconds": round(help_cpu, 3),
        "targets": {"score_seconds": 30, "help_seconds": 1},
        "tasks": len(doc["tasks"]),
        "paper_columns": len(doc["paper_table"]),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "cpus_visible": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
