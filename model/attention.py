"""Attention for both towers: the mask builder, the key/value cache, and grouped-query attention.

Legend for shapes: B batch, H query heads, K key/value heads, T query length, S key length, D head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def make_attention_mask(
    valid: torch.Tensor,
    q_index: torch.Tensor,
    prefix: torch.Tensor | None = None,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Which keys each query may see: bool [B, 1, T, S].

    valid:   bool [B, S], False for padding and for cache slots not written yet.
    q_index: long [T], the sequence index of each query (the key axis is 0..S-1).
    prefix:  bool [B, S] or None, True for prefix tokens, which see each other in both directions.
    sliding_window: a key is visible only if it is less than this many steps behind the query.

    The causal and sliding-window rules apply to everything; the prefix rule opens full attention among prefix
    tokens on top of them (inside or outside the window, as transformers does). Each query also sees itself, so a
    padding query never has an empty row (which would give NaN and leak through 0 * NaN into real rows).

    Examples with S = 4, valid = [0, 1, 1, 1] (one left pad), rows are queries 0..3:
        causal (prefix None)      prefix = [0, 1, 1, 0]       causal, sliding_window = 2
        1 0 0 0                   1 0 0 0                     1 0 0 0
        0 1 0 0                   0 1 1 0                     0 1 0 0
        0 1 1 0                   0 1 1 0                     0 1 1 0
        0 1 1 1                   0 1 1 1                     0 0 1 1
    """
    S = valid.shape[1]
    kv_index = torch.arange(S, device=valid.device)
    allowed = kv_index[None, :] <= q_index[:, None]  # T, S
    if sliding_window is not None:
        allowed = allowed & (q_index[:, None] - kv_index[None, :] < sliding_window)
    allowed = allowed[None]  # 1, T, S
    if prefix is not None:
        allowed = allowed | (prefix[:, q_index, None] & prefix[:, None, :])
    allowed = allowed & valid[:, None, :]
    allowed = allowed | (q_index[:, None] == kv_index[None, :])
    return allowed[:, None]


class KVCache:
    """Keys and values of every decoder layer, allocated once per batch and written in place at a slot index.

    With left padding every row's prompt ends at the same slot, so one slot index serves the whole batch and the
    writes are plain slice assignments: no concatenation, no reallocation while decoding.
    """

    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, max_len: int, head_dim: int, dtype, device):
        shape = (num_layers, batch, num_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v [B, K, T, D] at slots start..start+T-1; return everything written so far, [B, K, start+T, D]."""
        end = start + k.shape[2]
        if end > self.max_len:
            raise IndexError(f"KV cache holds {self.max_len} slots, write up to {end} asked")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


def grouped_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """Attention of q [B, H, T, D] over k, v [B, K, S, D] with H a multiple of K; returns [B, H, T, D].

    Instead of repeating each key/value head for its H/K query heads, the query heads of a group are folded into
    the query axis: [B, K, G*T, D]. Same result, no copy of the cache, and a one-token decode step becomes a matrix
    product instead of G matrix-vector products.
    """
    B, H, T, D = q.shape
    K, S = k.shape[1], k.shape[2]
    G = H // K
    q = q.reshape(B, K, G * T, D)  # query head h = kv_head * G + g
    if mask is not None and G > 1 and T > 1:
        mask = mask[:, :, None].expand(B, 1, G, T, S).reshape(B, 1, G * T, S)
    if softcap is None:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    else:
        # Gemma 2 caps the scores before masking, so the fused kernels (which take no cap) cannot be used.
        scores = (q @ k.transpose(-1, -2)) * scale
        scores = torch.tanh(scores / softcap) * softcap
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = probs @ v
    return out.reshape(B, H, T, D)
