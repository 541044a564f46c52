"""Merge precision: a LoRA delta folded into bf16 weights survives (fp32 sum, stochastic rounding to bf16)."""

from __future__ import annotations

import copy

import torch
from peft import LoraConfig, get_peft_model

from omics.model import merge_adapter, round_stochastically


class Layer(torch.nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.proj = torch.nn.Linear(size, size, bias=False, dtype=torch.bfloat16)
        torch.nn.init.normal_(self.proj.weight, std=0.02)


def small_delta_model(size: int = 512, r: int = 16, ratio: float = 0.002):
    """A bf16 layer with a fp32 LoRA whose delta has `ratio` of the weight's RMS (LoRA's trained regime)."""
    torch.manual_seed(0)
    model = get_peft_model(Layer(size), LoraConfig(r=r, lora_alpha=r // 2, target_modules=["proj"]))
    lora = model.base_model.model.proj
    for param in (lora.lora_A["default"].weight, lora.lora_B["default"].weight):
        param.data = torch.randn_like(param.data, dtype=torch.float32)
    delta = lora.get_delta_weight("default")
    lora.lora_B["default"].weight.data *= ratio * 0.02 / delta.square().mean().sqrt()
    return model, lora


def subspace_error(merged: torch.Tensor, base: torch.Tensor, lora) -> float:
    """Relative error of merged - base against the true delta within the adapter's row and column spaces:
    what the merged layer does wrong to the inputs the adapter reads and the outputs it writes."""
    true = lora.get_delta_weight("default").double()
    error = merged.double() - base.double() - true
    cols = torch.linalg.qr(lora.lora_B["default"].weight.double())[0]
    rows = torch.linalg.qr(lora.lora_A["default"].weight.double().T)[0]
    return ((cols.T @ error @ rows).norm() / true.norm()).item()


def test_merge_keeps_small_deltas_that_the_plain_bf16_merge_rounds_away():
    model, lora = small_delta_model()
    base = lora.get_base_layer().weight.detach().clone()
    plain = copy.deepcopy(model).merge_and_unload().proj.weight
    merged = merge_adapter(copy.deepcopy(model)).proj.weight
    assert merged.dtype == torch.bfloat16
    assert subspace_error(plain, base, lora) > 0.15  # nearest rounding drops ~20% of a 0.2% delta
    assert subspace_error(merged, base, lora) < 0.06


def test_stochastic_rounding_is_unbiased_between_neighbours():
    ulp = 2.0**-7  # bf16 spacing in [1, 2)
    x = torch.full((20000,), 1 + 0.25 * ulp)
    rounded = round_stochastically(x, torch.Generator().manual_seed(0)).float()
    assert set(rounded.unique().tolist()) == {1.0, 1 + ulp}
    assert abs(rounded.mean().item() - x[0].item()) < 0.02 * ulp
    exact = torch.tensor([1.0, -3.5, 0.0])
    assert torch.equal(round_stochastically(exact, torch.Generator().manual_seed(0)).float(), exact)
