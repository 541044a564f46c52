"""Merge precision: what folding a LoRA delta into bf16 weights keeps, nearest rounding (PEFT's plain merge)
against `omics.model.merge_adapter` (fp32 sum, stochastic rounding).

    python benchmarks/merge_precision.py --out benchmarks/results/merge-precision.json

Part 1, weight space at Llama-3.1-8B widths (q_proj 4096x4096, down_proj 14336→4096, LoRA r and alpha of
omics/configs/stage1.yaml and stage2.yaml, PEFT's A initialisation): the merged delta (merged - base) against the
true delta, for delta sizes from 0.1% to 10% of the weight's RMS. Part 2, loss: the tiny Llama trained with
LoRA through `omics stage2 train`, its base stored in bf16; the answer-only loss of the adapter model, of the
nearest merge and of the stochastic merge (fp32 compute, so only the weights' storage differs).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM

from omics.cli import main as omics
from omics.config import TrainConfig
from omics.data.packing import PackedCollator
from omics.loss import MergeCheck
from omics.model import load_tokenizer, merge_adapter
from omics.paths import SAMPLES, cache_dir
from omics.stage2.train import STAGE
from omics.tiny import build_tiny_llama
from omics.train import build_dataset

SHAPES = {"q_proj": (4096, 4096), "down_proj": (4096, 14336)}  # (out, in)
RANKS = {"stage1": (128, 64), "stage2": (64, 32)}  # r, alpha
RATIOS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1]
SEEDS = (0, 1, 2)  # stochastic rounding draws, for the loss
WEIGHT_STD = 0.02  # Llama's initializer range; bf16's relative spacing makes the results scale-free anyway


class Layer(torch.nn.Module):
    def __init__(self, out_features: int, in_features: int):
        super().__init__()
        self.proj = torch.nn.Linear(in_features, out_features, bias=False, dtype=torch.bfloat16)
        torch.nn.init.normal_(self.proj.weight, std=WEIGHT_STD)


def delta_quality(merged: torch.Tensor, base: torch.Tensor, true: torch.Tensor, lora: LoraLayer) -> dict[str, float]:
    """Relative error and cosine of the merged delta; `kept`, the share of the true delta kept along its own
    direction (1 = unbiased); `subspace_error`, the relative error within the adapter's rank-r row and column
    spaces: what the layer does differently to the inputs the adapter reads, to the outputs it writes."""
    got, true = merged.double() - base.double(), true.double()
    error = got - true
    cols = torch.linalg.qr(lora.lora_B["default"].weight.double())[0]
    rows = torch.linalg.qr(lora.lora_A["default"].weight.double().T)[0]
    return {"relative_error": round((error.norm() / true.norm()).item(), 4),
            "cosine": round(torch.nn.functional.cosine_similarity(got.flatten(), true.flatten(), dim=0).item(), 4),
            "kept": round(((got * true).sum() / true.square().sum()).item(), 4),
            "subspace_error": round(((cols.T @ error @ rows).norm() / true.norm()).item(), 4)}


def weight_space() -> list[dict]:
    rows = []
    for stage, (r, alpha) in RANKS.items():
        for name, (out_features, in_features) in SHAPES.items():
            torch.manual_seed(0)
            layer = Layer(out_features, in_features)
            base = layer.proj.weight.detach().clone()
            model = get_peft_model(layer, LoraConfig(r=r, lora_alpha=alpha, target_modules=["proj"]))
            lora = model.base_model.model.proj
            for param in (lora.lora_A["default"].weight, lora.lora_B["default"].weight):
                param.data = param.data.float()  # as prepare_for_training keeps them
            b = lora.lora_B["default"].weight
            unit = torch.randn_like(b)
            b.data = unit
            unit_rms = lora.get_delta_weight("default").square().mean().sqrt()
            for ratio in RATIOS:
                b.data = unit * ratio * WEIGHT_STD / unit_rms
                true = lora.get_delta_weight("default")
                nearest = copy.deepcopy(model).merge_and_unload().proj.weight
                stochastic = merge_adapter(copy.deepcopy(model)).proj.weight
                rows.append({"stage": stage, "layer": name, "r": r, "delta_rms_over_weight_rms": ratio,
                             "nearest": delta_quality(nearest, base, true, lora),
                             "stochastic": delta_quality(stochastic, base, true, lora)})
                print(rows[-1], flush=True)
    return rows


def lora_layers(model: torch.nn.Module) -> list[LoraLayer]:
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def relative_delta(model: PeftModel) -> float:
    """RMS of the LoRA deltas over RMS of the weights they are merged into."""
    layers = lora_layers(model)
    delta = sum(m.get_delta_weight("default").float().square().sum().item() for m in layers)
    weight = sum(m.get_base_layer().weight.float().square().sum().item() for m in layers)
    return (delta / weight) ** 0.5


def loss_gap(workdir: Path, steps: int, learning_rate: float) -> dict:
    """Train LoRA once (LoRA only: no norms, no chat rows, so only the merge differs), then scale its B
    matrices to each delta size of RATIOS and compare the losses on the held-out blocks."""
    tiny = build_tiny_llama(workdir / "tiny")
    overrides = [f"max_steps={steps}", f"learning_rate={learning_rate}", "lora_r=16", "lora_alpha=8",
                 "max_length=256", "micro_batch_size=8", "grad_accum=1", "gradient_checkpointing=false",
                 "warmup_ratio=0", "save_steps=100000", "liger=false", "train_norms=false",
                 "train_chat_token_rows=false"]
    out = workdir / "stage2"
    assert omics(["stage2", "train", "--data", str(SAMPLES / "stage2_train.jsonl"), "--base-model", str(tiny),
                  "--output-dir", str(out / "model"), "--metrics-dir", str(out / "metrics"),
                  *[a for o in overrides for a in ("--set", o)]]) == 0
    tokenizer = load_tokenizer(tiny, chat=True)
    config = TrainConfig(**json.loads((out / "metrics" / "parameters.json").read_text())["config"])
    held_out = build_dataset(STAGE, SAMPLES / "stage2_test.jsonl", tokenizer, config, {},
                             cache_dir(out / "model"))[0]
    check = MergeCheck.first_blocks(held_out, PackedCollator(tokenizer.pad_token_id), count=len(held_out))
    base = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.bfloat16)
    trained = PeftModel.from_pretrained(copy.deepcopy(base), out / "model" / "adapter")
    trained_ratio = relative_delta(trained)
    base_loss = check(copy.deepcopy(base).float())
    rows = []
    for ratio in [*RATIOS, trained_ratio]:
        model = copy.deepcopy(trained)
        for layer in lora_layers(model):
            layer.lora_B["default"].weight.data *= ratio / trained_ratio
        losses = {"adapter": check(copy.deepcopy(model).float()),
                  "nearest": check(copy.deepcopy(model).merge_and_unload().float()),
                  **{f"stochastic_seed{seed}": check(merge_adapter(copy.deepcopy(model), seed).float())
                     for seed in SEEDS}}
        lost = {k: round((v - losses["adapter"]) / (base_loss - losses["adapter"]), 4)
                for k, v in losses.items() if k != "adapter"}
        rows.append({"delta_rms_over_weight_rms": round(ratio, 5), "share_of_improvement_lost": lost,
                     "losses": {k: round(v, 6) for k, v in losses.items()}})
        print(rows[-1], flush=True)
    return {"steps": steps, "learning_rate": learning_rate, "trained_delta_rms": round(trained_ratio, 5),
            "base_loss": round(base_loss, 6), "held_out_blocks": len(held_out), "rows": rows,
            "run_summary_merge": json.loads((out / "metrics" / "run_summary.json").read_text())["merge"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/merge-precision.json"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--only", choices=["weights", "loss"], help="rerun one part, keep the other from --out")
    args = parser.parse_args()
    result = json.loads(args.out.read_text()) if args.only else {}
    with tempfile.TemporaryDirectory() as workdir:
        if args.only != "loss":
            result["weight_space_8b_width"] = weight_space()
        if args.only != "weights":
            result["loss_tiny_llama"] = loss_gap(Path(workdir), args.steps, args.learning_rate)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
