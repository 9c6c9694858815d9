"""PaliGemma: SigLIP patches, projected into the Gemma decoder's embedding space, in front of the text prompt.

The network only knows tensors. Prompts and images become tensors in `tokenizer.py` and `image_processing.py`;
the decoding loop lives in `generation.py`, checkpoint reading in `loading.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .attention import KVCache, make_attention_mask
from .config import PaliGemmaConfig
from .gemma import GemmaDecoder
from .rope import rope_tables
from .siglip import SiglipVisionTower

if TYPE_CHECKING:
    from .generation import Generation
    from .image_processing import ImageProcessor
    from .tokenizer import PromptTokenizer


class Projector(nn.Module):
    """One linear map from the vision width to the text width; no activation."""

    def __init__(self, vision_width: int, text_width: int):
        super().__init__()
        self.linear = nn.Linear(vision_width, text_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class PaliGemma(nn.Module):
    def __init__(
        self,
        config: PaliGemmaConfig,
        tokenizer: PromptTokenizer | None = None,
        image_processor: ImageProcessor | None = None,
    ):
        super().__init__()
        self.config = config
        self.vision_tower = SiglipVisionTower(config.vision)
        self.multi_modal_projector = Projector(config.vision.hidden_size, config.projection_dim)
        self.language_model = GemmaDecoder(config.text)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.text.hidden_size, config.text.vocab_size, bias=False)
        self.tokenizer = tokenizer
        self.image_processor = image_processor

    @classmethod
    def from_pretrained(
        cls, path: str | Path, dtype: torch.dtype | str | None = None, device: torch.device | str | None = None
    ) -> PaliGemma:
        """Load a Hugging Face PaliGemma 1 or 2 checkpoint folder (safetensors only). dtype None means float32."""
        from .loading import load_pretrained

        return load_pretrained(path, dtype=dtype, device=device)

    @property
    def device(self) -> torch.device:
        return self.language_model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.embed_tokens.weight.dtype

    # ---- pieces shared by forward, prefill and decode ----------------------------------------------------------

    def embed_inputs(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings [B, T, C] with each <image> placeholder replaced by its projected patch, in order.

        Image features go in unscaled: only text embeddings carry Gemma's sqrt(hidden) factor.
        """
        is_image = input_ids == self.config.image_token_id
        x = self.language_model.embed(input_ids.masked_fill(is_image, 0))  # the image id may lie past the vocab
        n_image = int(is_image.sum())
        if pixel_values is None:
            if n_image:
                raise ValueError(f"input_ids hold {n_image} <image> tokens but no pixel_values were given")
            return x
        features = self.multi_modal_projector(self.vision_tower(pixel_values.to(self.device, self.dtype)))
        if n_image != features.shape[0] * features.shape[1]:
            raise ValueError(
                f"expected {features.shape[1]} <image> tokens for each of {features.shape[0]} images "
                f"but input_ids hold {n_image}"
            )
        return x.masked_scatter(is_image[..., None], features.to(x.dtype))

    def lm_logits(self, h: torch.Tensor) -> torch.Tensor:
        weight = self.lm_head.weight if hasattr(self, "lm_head") else self.language_model.embed_tokens.weight
        logits = F.linear(h, weight)
        cap = self.config.text.final_logit_softcap
        return torch.tanh(logits / cap) * cap if cap else logits

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.config.text
        return rope_tables(positions, t.head_dim, t.rope_theta, self.dtype)

    def _masks(
        self, valid: torch.Tensor, q_index: torch.Tensor, prefix: torch.Tensor | None
    ) -> dict[str, torch.Tensor | None]:
        """Masks for global and sliding layers; None where nothing is masked, so SDPA can take its fastest path."""
        full = make_attention_mask(valid, q_index, prefix)
        masks = {"full": None if bool(full.all()) else full}
        if "sliding" in self.config.text.layer_types:
            sliding = make_attention_mask(valid, q_index, prefix, self.config.text.sliding_window)
            masks["sliding"] = None if bool(sliding.all()) else sliding
        return masks

    # ---- entry points ------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits float[B, T, V] for long[B, T] ids, without a cache.

        Tokens with token_type_ids == 0 (all of them when it is None) are prefix and see each other in both
        directions; the rest are causal. Positions count real tokens only (1 for the first), so left padding does
        not shift them.
        """
        return self.lm_logits(self.hidden_states(input_ids, pixel_values, attention_mask, token_type_ids))

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final-normed hidden states [B, T, C] of `forward`, before the vocabulary projection.

        Training takes these so that it projects only the answer positions onto the vocabulary.
        """
        input_ids = input_ids.to(self.device)
        T = input_ids.shape[1]
        valid = torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is not None:
            valid = attention_mask.to(self.device).bool()
        prefix = valid if token_type_ids is None else valid & (token_type_ids.to(self.device) == 0)
        x = self.embed_inputs(input_ids, pixel_values)
        rope = self._rope(valid.long().cumsum(1))
        masks = self._masks(valid, torch.arange(T, device=self.device), prefix)
        return self.language_model(x, rope, masks)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        t = self.config.text
        return KVCache(t.num_layers, batch, t.num_kv_heads, max_len, t.head_dim, self.dtype, self.device)

    def prefill(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, valid: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        """Run the whole left-padded prompt [B, T] bidirectionally, fill cache slots 0..T-1, and return the
        next-token logits [B, V] of the last position."""
        T = input_ids.shape[1]
        x = self.embed_inputs(input_ids, pixel_values)
        rope = self._rope(valid.long().cumsum(1))
        masks = self._masks(valid, torch.arange(T, device=self.device), prefix=valid)
        h = self.language_model(x, rope, masks, cache, start=0, last_only=True)
        return self.lm_logits(h[:, -1])

    def decode_step(
        self, tokens: torch.Tensor, positions: torch.Tensor, slot: int, valid: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        """One causal step: tokens [B] at RoPE positions [B], written to cache slot `slot`; valid [B, slot + 1]
        marks the cache slots that are not padding. Returns logits [B, V]."""
        x = self.language_model.embed(tokens[:, None])
        rope = self._rope(positions[:, None])
        masks = self._masks(valid, torch.tensor([slot], device=self.device), prefix=None)
        h = self.language_model(x, rope, masks, cache, start=slot)
        return self.lm_logits(h[:, -1])

    def generate(
        self,
        images: list,
        prompts: list[str] | str,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        return_logprobs: bool = False,
        stop_at_eos: bool = True,
    ) -> list[str] | list[Generation]:
        """Text for each (image, prompt) pair; see `model.generation.generate`."""
        from .generation import generate

        return generate(
            self,
            images,
            prompts,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            return_logprobs=return_logprobs,
            stop_at_eos=stop_at_eos,
        )
