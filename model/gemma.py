"""Gemma and Gemma 2 decoders: one block class with Gemma 2's extras behind the config's `family`.

Module names follow the Hugging Face checkpoints so that weights map by prefix alone. The two families differ in
four places only (extra norms, soft-capping, sliding-window layers, the attention scale), so one class with plain
`if`s reads better than two near-identical files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CacheWrite, grouped_attention
from .config import TextConfig
from .norm import RMSNorm
from .rope import apply_rope


class Projections:
    """How a forward pass computes the decoder's linear maps: here, each module on its own weight.

    Generation's runner (model/runner.py) may pass a subclass that computes the same maps from copies of the same
    weights in a faster memory layout (oneDNN's prepacked format); training and plain forward passes never do.
    """

    def __call__(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module(x)

    def head(self, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The output projection h [..., C] -> [..., V] with the model's own [V, C] weight."""
        return F.linear(h, weight)


PLAIN = Projections()


def at(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Position index[b] of each row b of x [B, T, ...] (or of a [B, H, T, D] table), kept as a length-1 axis."""
    rows = torch.arange(x.shape[0], device=x.device)
    if x.dim() == 4:  # [B, H, T, D] tables (rope) and masks [B, 1, T, S]
        return x[rows, :, index][:, :, None]
    return x[rows, index][:, None]


class SelfAttention(nn.Module):
    """Grouped-query attention with rotary positions; writes its keys and values to the cache when given one."""

    def __init__(self, cfg: TextConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        cache: CacheWrite | None,
        last: torch.Tensor | None,
        project: Projections = PLAIN,
    ) -> torch.Tensor:
        """x [B, T, C] -> [B, T, C], or [B, 1, C] with only position last[b] of each row when `last` is given.

        `last` is for the top layer of a prefill: keys and values of every position go to the cache, but only each
        row's last real position feeds the next-token logits, so its query, output projection and MLP are all we
        need. A prefill attends over its own keys (the cache is only written); a decode step over the cache.
        """
        cfg = self.cfg
        B, T, _ = x.shape
        cos, sin = rope
        xq, cos_q, sin_q = x, cos, sin
        if last is not None:
            xq, cos_q, sin_q = at(x, last), at(cos.expand(B, -1, -1, -1), last), at(sin.expand(B, -1, -1, -1), last)
        q = project(self.q_proj, xq).view(B, xq.shape[1], cfg.num_heads, cfg.head_dim).transpose(1, 2)
        k = project(self.k_proj, x).view(B, T, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        v = project(self.v_proj, x).view(B, T, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        q = apply_rope(q, cos_q, sin_q)
        k = apply_rope(k, cos, sin)
        if cache is not None and cache.positions is None:
            cache.cache.write_prompt(self.layer, cache.slots, k, v)
        elif cache is not None:
            k, v = cache.cache.write_step(self.layer, cache.positions, k, v)
        if mask is not None and last is not None and mask.shape[2] > 1:
            mask = at(mask.expand(B, -1, -1, -1), last)
        out = grouped_attention(q, k, v, mask, cfg.attention_scale, cfg.attn_logit_softcap)
        return project(self.o_proj, out.transpose(1, 2).reshape(B, q.shape[2], cfg.num_heads * cfg.head_dim))


class MLP(nn.Module):
    """down(gelu_tanh(gate(x)) * up(x))."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, project: Projections = PLAIN) -> torch.Tensor:
        gate, up = project(self.gate_proj, x), project(self.up_proj, x)
        if torch.is_grad_enabled():  # backward needs gelu's input, so nothing may be overwritten
            return project(self.down_proj, F.gelu(gate, approximate="tanh") * up)
        # At prefill these are the largest tensors of the step (tokens x intermediate): doing the activation and
        # the product in place saves two of them, about a third of the MLP's time in bfloat16 on CPU.
        return project(self.down_proj, torch.ops.aten.gelu_(gate, approximate="tanh").mul_(up))


class DecoderBlock(nn.Module):
    """One Gemma (or Gemma 2) layer: pre-norm attention and MLP, each added to the residual stream."""

    def __init__(self, cfg: TextConfig, layer: int):
        super().__init__()
        self.gemma2 = cfg.family == "gemma2"
        self.sliding = cfg.is_sliding(layer)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = SelfAttention(cfg, layer)
        # Gemma 1 calls its pre-MLP norm "post_attention_layernorm"; Gemma 2 uses that name for a norm on the
        # attention output and adds a pre- and post-feed-forward pair.
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if self.gemma2:
            self.pre_feedforward_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
            self.post_feedforward_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, rope, mask, cache, last=None, project: Projections = PLAIN):
        attn = self.self_attn(self.input_layernorm(x), rope, mask, cache, last, project)
        if last is not None:
            x = at(x, last)
        if self.gemma2:
            x = x + self.post_attention_layernorm(attn)
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x), project))
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x), project)


class GemmaDecoder(nn.Module):
    """Token embedding, the layers and the final norm (the output projection is the model's: tied or lm_head)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderBlock(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings [B, T, C] of ids [B, T], scaled by sqrt(hidden)."""
        # Gemma scales token embeddings by sqrt(hidden), with the constant rounded to the weights' dtype first
        # (45.25 rather than 45.2548 in bfloat16), as the released checkpoints expect.
        scale = torch.tensor(self.cfg.hidden_size**0.5, dtype=self.embed_tokens.weight.dtype)
        return self.embed_tokens(ids) * scale

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        masks: dict[str, torch.Tensor | None],
        cache: CacheWrite | None = None,
        last: torch.Tensor | None = None,
        project: Projections = PLAIN,
    ) -> torch.Tensor:
        """Embeddings [B, T, C] -> final-normed hidden states [B, T, C] ([B, 1, C]: position last[b] per row).

        masks: {"full": ..., "sliding": ...}, each bool [B, 1, T, S] or None for "attend to everything".
        project: how the linear maps are computed (see Projections).
        """
        top = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            mask = masks.get("sliding" if layer.sliding else "full")
            x = layer(x, rope, mask, cache, last if i == top else None, project)
        return self.norm(x)
