"""Gemma's RMSNorm."""

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm with Gemma's quirks: computed in float32 and scaled by (1 + w), so a zero weight is the identity.

    Both quirks matter for parity in bfloat16: normalizing in the model dtype or scaling by w alone drifts from the
    released checkpoints, which were trained this way.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's fused kernel computes x * rsqrt(mean(x^2) + eps) * weight in one pass over x.
        return F.rms_norm(x.float(), x.shape[-1:], 1.0 + self.weight.float(), self.eps).type_as(x)
