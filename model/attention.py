"""Attention for both towers: the mask builder, the key/value cache, and grouped-query attention.

Legend for shapes: B batch, H query heads, K key/value heads, T query length, S key length, D head dim.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """Keys and values of every decoder layer for a fixed number of slots (rows) and positions, allocated once and
    written in place: a prefill writes a row's prompt at positions 0..T-1, a decode step writes each row's new token
    at that row's own position. Shapes never change, so a compiled decode step (and a CUDA graph) can be replayed.

    k, v: one tensor [B, K, L, D] per layer. (Separate tensors, not slices of one: a compiled step then updates
    each in place, where a write into a slice of a larger graph input makes inductor copy the whole of it.)
    """

    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, max_len: int, head_dim: int, dtype, device):
        shape = (batch, num_kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.batch, self.max_len = batch, max_len
        self.rows = torch.arange(batch, device=device)

    def write_prompt(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """k/v [g, K, T, D] of g prompts -> slots `slots` [g], positions 0..T-1."""
        T = k.shape[2]
        if self.max_len < T:
            raise IndexError(f"KV cache holds {self.max_len} positions, a prompt of {T} asked")
        self.k[layer][slots, :, :T] = k
        self.v[layer][slots, :, :T] = v

    def write_step(self, layer: int, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """k/v [B, K, 1, D] of one new token per slot -> position `positions[b]` of slot b; returns every slot's
        keys and values [B, K, L, D] (positions a row has not written are hidden by the mask)."""
        # In place, by index (slot b, every head, position positions[b]). scatter_ along the position axis computes
        # the same, but on a CPU in bfloat16 it copied the whole layer's cache at every step (about a tenth of the
        # step at batch 8).
        self.k[layer][self.rows, :, positions] = k[:, :, 0]
        self.v[layer][self.rows, :, positions] = v[:, :, 0]
        return self.k[layer], self.v[layer]


@dataclass(frozen=True)
class CacheWrite:
    """Where one forward pass puts its keys and values: the prompts of batch rows into cache `slots` [B'] (a
    prefill), or one token per slot at `positions` [B] (a decode step over every slot)."""

    cache: KVCache
    slots: torch.Tensor | None = None
    positions: torch.Tensor | None = None


def step_mask(lengths: torch.Tensor, max_len: int, sliding_window: int | None = None) -> torch.Tensor:
    """Which cache positions one decode query per row may see: bool [B, 1, 1, L], built on the device.

    Row b writes its new token at position lengths[b] and sees positions 0..lengths[b] (itself included); with a
    sliding window only the last `sliding_window` of them. Broadcast over heads, never expanded.
    """
    j = torch.arange(max_len, device=lengths.device)
    visible = j[None, :] <= lengths[:, None]
    if sliding_window is not None:
        visible = visible & (lengths[:, None] - j[None, :] < sliding_window)
    return visible[:, None, None, :]


# Memory a soft-capped attention may spend on float32 scores at once; larger inputs are done in query chunks.
SCORES_BUDGET = 256 * 2**20


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
    product instead of G matrix-vector products. mask: bool [B or 1, 1, T, S] (True = visible) or None.
    """
    B, H, T, D = q.shape
    K, S = k.shape[1], k.shape[2]
    G = H // K
    q = q.reshape(B, K, G * T, D)  # query head h = kv_head * G + g
    if mask is not None and G > 1 and T > 1:
        mask = mask[:, :, None].expand(mask.shape[0], 1, G, T, S).reshape(mask.shape[0], 1, G * T, S)
    if softcap is None:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    else:
        out = softcapped_attention(q, k, v, mask, scale, softcap)
    return out.reshape(B, H, T, D)


def softcapped_attention(q, k, v, mask, scale: float, softcap: float) -> torch.Tensor:
    """Gemma 2's attention: scores capped by tanh(s / cap) * cap before the mask and the softmax. The fused kernels
    take no cap, so the scores are formed explicitly, in query chunks small enough that the float32 scores of one
    chunk fit SCORES_BUDGET (a 896-px prefill at batch 64 would otherwise need tens of gigabytes)."""
    B, K, Q, _ = q.shape
    S = k.shape[2]
    chunk = max(1, SCORES_BUDGET // max(1, B * K * S * 4))
    if chunk >= Q:
        return _capped(q, k, v, mask, scale, softcap)
    parts = []
    for start in range(0, Q, chunk):
        m = None if mask is None else mask[:, :, start : start + chunk]
        parts.append(_capped(q[:, :, start : start + chunk], k, v, m, scale, softcap))
    return torch.cat(parts, dim=2)


def _capped(q, k, v, mask, scale: float, softcap: float) -> torch.Tensor:
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return probs @ v
