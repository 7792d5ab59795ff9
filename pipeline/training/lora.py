"""LoRA adapters for training the offence encoder (kind "lora"; Hu et al., 2021).

Only training wraps layers in `LoRALinear`; loading a shipped kind "lora" encoder adds the low-rank
products into the base weights instead (pipeline.models.offence_encoder.lora_deltas / merge_lora),
so inference costs nothing extra per token.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LORA_TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")


class LoRALinear(nn.Module):
    """y = W x + (alpha / r) * B A x, with W frozen (Hu et al., 2021)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.05):
        super().__init__()
        self.base = base
        self.scale = alpha / r
        self.lora_a = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.base(x) + (self.dropout(x) @ self.lora_a.T @ self.lora_b.T) * self.scale


def _named_targets(encoder: nn.Module):
    for name, module in encoder.named_modules():
        if isinstance(module, nn.Linear) and "encoder.layer." in f"encoder.{name}" and name.endswith(LORA_TARGETS):
            yield name, module


def add_lora(bert: nn.Module, r: int, alpha: float) -> list[str]:
    """Wrap every attention and feed-forward projection of `bert.encoder` in a LoRALinear."""
    names = []
    for name, module in list(_named_targets(bert.encoder)):
        parent_name, _, child = name.rpartition(".")
        setattr(bert.encoder.get_submodule(parent_name), child, LoRALinear(module, r, alpha))
        names.append(f"encoder.{name}")
    return names
