"""LoRA: a trainable low-rank update beside a frozen linear layer, merged back before saving.

y = W x + (alpha / r) * B A x, with A [r, in] drawn small and B [r, out] zero, so training starts from the
pretrained function exactly. `merge_lora` folds B A into W and puts the plain nn.Linear back, so a LoRA
fine-tune is saved as an ordinary checkpoint that any PaliGemma loader (ours, transformers) reads.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# The projections LoRA adapts by default: attention and MLP of the text decoder (the vision tower stays frozen).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def merged(self) -> nn.Linear:
        with torch.no_grad():
            self.base.weight += (self.lora_b @ self.lora_a) * self.scale
        return self.base


def add_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    targets: tuple[str, ...] = DEFAULT_TARGETS,
    under: str = "language_model",
) -> list[str]:
    """Replace every nn.Linear named in `targets` below the `under` submodule; returns the replaced names."""
    replaced = []
    root = model.get_submodule(under)
    for name, module in list(root.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, rank, alpha))
                replaced.append(f"{under}.{name}.{child_name}".replace("..", "."))
    return replaced


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA update into its base layer in place; returns how many layers were merged."""
    count = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.merged())
                count += 1
    return count


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict the model would have after `merge_lora`, without touching the model (training goes on)."""
    state = {}
    lora = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if leaf in ("lora_a", "lora_b"):
            continue
        parent, _, inner = owner.rpartition(".")
        if inner == "base" and parent in lora:
            m = lora[parent]
            if leaf == "weight":
                value = value + (m.lora_b @ m.lora_a).detach() * m.scale
            key = f"{parent}.{leaf}"
        state[key] = value
    return state
