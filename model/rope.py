"""Rotary position embeddings, rotate-half form."""

import torch


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """cos and sin for integer positions [B, T] -> two tensors [B, 1, T, head_dim] in `dtype`.

    Frequencies and angles are computed in float32 and only the result is cast, as the reference does; computing
    angles in bfloat16 would lose whole radians at positions in the hundreds.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    angles = positions.float()[..., None] * inv_freq  # B, T, D/2
    angles = torch.cat((angles, angles), dim=-1)[:, None]  # B, 1, T, D
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, T, D] by the angles in cos/sin [B, 1, T, D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
