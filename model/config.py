"""Frozen configs for each part of PaliGemma, the table of named sizes, and the reader for Hugging Face's config.json.

Hugging Face's `config.json` carries a lot of bookkeeping (architectures, dtype, versions); we read the keys that
change the network and refuse values we do not implement (another RoPE type, another activation) instead of
silently computing something else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

GELU_TANH_NAMES = ("gelu_pytorch_tanh", "gelu_tanh", "gelu_fast", "gelu_new")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and, where there is one, the key."""


class ModelConfigError(CheckpointError):
    """A config.json that we cannot turn into a network; the message names the file and the key."""


@dataclass(frozen=True)
class VisionConfig:
    """SigLIP vision tower. Defaults are the So400m/14 tower every PaliGemma uses."""

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_layers: int = 27
    num_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    layer_norm_eps: float = 1e-6

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class TextConfig:
    """Gemma (PaliGemma 1) or Gemma 2 (PaliGemma 2) decoder.

    `family` switches on Gemma 2's extras: post-attention / post-feed-forward norms, attention and final-logit
    soft-capping, sliding-window layers and the query_pre_attn_scalar attention scale.
    """

    family: str = "gemma"  # "gemma" | "gemma2"
    vocab_size: int = 257216
    hidden_size: int = 2048
    intermediate_size: int = 16384
    num_layers: int = 18
    num_heads: int = 8
    num_kv_heads: int = 1
    head_dim: int = 256
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    query_pre_attn_scalar: float | None = None  # Gemma 2: attention scale is query_pre_attn_scalar ** -0.5
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    sliding_window: int | None = None
    layer_types: tuple[str, ...] = ()  # per layer: "full" or "sliding"; empty means all full

    def __post_init__(self) -> None:
        if self.family not in ("gemma", "gemma2"):
            raise ModelConfigError(f"text family must be 'gemma' or 'gemma2', got {self.family!r}")
        if self.num_heads % self.num_kv_heads:
            raise ModelConfigError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise ModelConfigError(f"expected {self.num_layers} layer_types but got {len(self.layer_types)}")
        if any(t not in ("full", "sliding") for t in self.layer_types):
            raise ModelConfigError(f"layer_types must be 'full' or 'sliding', got {self.layer_types}")
        if "sliding" in self.layer_types and not self.sliding_window:
            raise ModelConfigError("sliding layers need a sliding_window")

    @property
    def attention_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    def is_sliding(self, layer: int) -> bool:
        return bool(self.layer_types) and self.layer_types[layer] == "sliding"


@dataclass(frozen=True)
class PaliGemmaConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    projection_dim: int = 2048
    image_token_id: int = 257152
    pad_token_id: int = 0
    eos_token_id: int = 1
    bos_token_id: int = 2
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.projection_dim != self.text.hidden_size:
            raise ModelConfigError(
                f"projection_dim ({self.projection_dim}) must equal the text hidden_size ({self.text.hidden_size}): "
                "image features are inserted among the text embeddings"
            )

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches

    @classmethod
    def from_name(cls, name: str) -> PaliGemmaConfig:
        """A config from the table of named sizes (model/sizes.py: `tiny`, `mid`, `shapes`, `pg1-3b`, ...)."""
        from .sizes import SIZES

        if name not in SIZES:
            raise KeyError(f"unknown size {name!r}; known sizes: {', '.join(SIZES)}")
        return SIZES[name]

    def replace(self, **changes: Any) -> PaliGemmaConfig:
        return dataclasses.replace(self, **changes)

    # ---- Hugging Face config.json ------------------------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> PaliGemmaConfig:
        """Build a config from the dict in a Hugging Face PaliGemma `config.json` (transformers 4.x or 5.x)."""
        if d.get("model_type") != "paligemma":
            raise ModelConfigError(f"{source}: key 'model_type' is {d.get('model_type')!r}, expected 'paligemma'")
        v = _require(d, "vision_config", source)
        t = _require(d, "text_config", source)
        vision = _vision_from_hf(v, f"{source}: vision_config")
        text = _text_from_hf(t, d, f"{source}: text_config")
        image_token = d.get("image_token_index", d.get("image_token_id"))
        if image_token is None:
            raise ModelConfigError(f"{source}: key 'image_token_index' is missing")
        return cls(
            vision=vision,
            text=text,
            projection_dim=d.get("projection_dim", v.get("projection_dim", text.hidden_size)),
            image_token_id=image_token,
            pad_token_id=_first(t.get("pad_token_id", d.get("pad_token_id", 0))),
            eos_token_id=_first(t.get("eos_token_id", d.get("eos_token_id", 1))),
            bos_token_id=_first(t.get("bos_token_id", d.get("bos_token_id", 2))),
            tie_word_embeddings=d.get("tie_word_embeddings", t.get("tie_word_embeddings", True)),
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json transformers expects for these sizes (used to write random checkpoints)."""
        v, t = self.vision, self.text
        text: dict[str, Any] = {
            "model_type": t.family,
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_layers,
            "num_attention_heads": t.num_heads,
            "num_key_value_heads": t.num_kv_heads,
            "head_dim": t.head_dim,
            "rms_norm_eps": t.rms_norm_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": t.rope_theta},
            "hidden_activation": "gelu_pytorch_tanh",
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "bos_token_id": self.bos_token_id,
        }
        if t.family == "gemma2":
            text |= {
                "query_pre_attn_scalar": t.query_pre_attn_scalar,
                "attn_logit_softcapping": t.attn_logit_softcap,
                "final_logit_softcapping": t.final_logit_softcap,
                "sliding_window": t.sliding_window,
                "layer_types": [f"{x}_attention" for x in t.layer_types],
            }
        return {
            "model_type": "paligemma",
            "vision_config": {
                "model_type": "siglip_vision_model",
                "hidden_size": v.hidden_size,
                "intermediate_size": v.intermediate_size,
                "num_hidden_layers": v.num_layers,
                "num_attention_heads": v.num_heads,
                "image_size": v.image_size,
                "patch_size": v.patch_size,
                "num_channels": v.num_channels,
                "layer_norm_eps": v.layer_norm_eps,
                "hidden_act": "gelu_pytorch_tanh",
                "projection_dim": self.projection_dim,
                "vision_use_head": False,
            },
            "text_config": text,
            "projection_dim": self.projection_dim,
            "image_token_index": self.image_token_id,
            "vocab_size": t.vocab_size,
            "pad_token_id": self.pad_token_id,
            "tie_word_embeddings": self.tie_word_embeddings,
        }


def _vision_from_hf(v: dict[str, Any], vsrc: str) -> VisionConfig:
    """The SigLIP part of a Hugging Face config (`vision_config`)."""
    if v.get("model_type", "siglip_vision_model") != "siglip_vision_model":
        raise ModelConfigError(f"{vsrc}.model_type is {v.get('model_type')!r}, expected 'siglip_vision_model'")
    act = v.get("hidden_act", "gelu_pytorch_tanh")
    if act not in GELU_TANH_NAMES:
        raise ModelConfigError(f"{vsrc}.hidden_act is {act!r}; only the tanh GELU is implemented")
    return VisionConfig(
        hidden_size=v.get("hidden_size", 1152),
        intermediate_size=v.get("intermediate_size", 4304),
        num_layers=v.get("num_hidden_layers", 27),
        num_heads=v.get("num_attention_heads", 16),
        image_size=v.get("image_size", 224),
        patch_size=v.get("patch_size", 14),
        num_channels=v.get("num_channels", 3),
        layer_norm_eps=v.get("layer_norm_eps", 1e-6),
    )


def _text_from_hf(t: dict[str, Any], d: dict[str, Any], tsrc: str) -> TextConfig:
    """The Gemma / Gemma 2 part of a Hugging Face config (`text_config`; a few keys may sit at the top, in d)."""
    family = t.get("model_type", "gemma")
    if family not in ("gemma", "gemma2"):
        raise ModelConfigError(f"{tsrc}.model_type is {family!r}, expected 'gemma' or 'gemma2'")
    act = t.get("hidden_activation") or t.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in GELU_TANH_NAMES:
        raise ModelConfigError(f"{tsrc}.hidden_activation is {act!r}; only the tanh GELU is implemented")
    rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ModelConfigError(f"{tsrc}.rope_parameters asks for {rope.get('rope_type')!r}; only default RoPE exists")
    theta = rope.get("rope_theta", t.get("rope_theta", 10000.0))
    hidden, heads = t.get("hidden_size", 2048), t.get("num_attention_heads", 8)
    num_layers = t.get("num_hidden_layers", 18)
    gemma2 = family == "gemma2"
    return TextConfig(
        family=family,
        vocab_size=t.get("vocab_size", d.get("vocab_size", 257216)),
        hidden_size=hidden,
        intermediate_size=t.get("intermediate_size", 16384),
        num_layers=num_layers,
        num_heads=heads,
        num_kv_heads=t.get("num_key_value_heads", 1),
        head_dim=t.get("head_dim") or hidden // heads,
        rms_norm_eps=t.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta),
        query_pre_attn_scalar=t.get("query_pre_attn_scalar", 256) if gemma2 else None,
        attn_logit_softcap=t.get("attn_logit_softcapping", 50.0) if gemma2 else None,
        final_logit_softcap=t.get("final_logit_softcapping", 30.0) if gemma2 else None,
        sliding_window=t.get("sliding_window", 4096) if gemma2 else None,
        layer_types=_layer_types_from_hf(t, num_layers, tsrc) if gemma2 else (),
    )


def _layer_types_from_hf(t: dict[str, Any], num_layers: int, tsrc: str) -> tuple[str, ...]:
    """Gemma 2's per-layer attention kinds (even layers sliding when the config does not list them)."""
    hf_types = t.get("layer_types") or [
        "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_layers)
    ]
    names = {"sliding_attention": "sliding", "full_attention": "full"}
    if any(x not in names for x in hf_types):
        raise ModelConfigError(f"{tsrc}.layer_types has an unknown entry: {hf_types}")
    return tuple(names[x] for x in hf_types)


def _require(d: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    if not isinstance(d.get(key), dict):
        raise ModelConfigError(f"{source}: key {key!r} is missing or not an object")
    return d[key]


def _first(x: int | list[int]) -> int:
    return x[0] if isinstance(x, list) else x


def gemma2_layer_types(n: int) -> tuple[str, ...]:
    """Gemma 2 alternates local and global attention, starting with a sliding-window layer."""
    return tuple("sliding" if i % 2 == 0 else "full" for i in range(n))
