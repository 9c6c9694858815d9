"""PaliGemma: SigLIP patches, projected into the Gemma decoder's embedding space, in front of the text prompt.

The network only knows tensors. Prompts and images become tensors in `tokenizer.py` and `image_processing.py`;
the decoding loop lives in `generation.py`, checkpoint reading in `loading.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .attention import CacheWrite, KVCache, make_attention_mask, step_mask
from .config import PaliGemmaConfig
from .gemma import PLAIN, GemmaDecoder, Projections
from .loading import check_checkpoint, load_pretrained
from .rope import rope_tables
from .runner import Runner
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
        """Patch features [..., vision width] -> [..., text width]."""
        return self.linear(x)


class PaliGemma(nn.Module):
    """The whole network, with its tokenizer and image processor when loaded, and the runner that generates with it.

    Load with `from_pretrained`; `forward` gives logits for training and checks, `generate` answers (image, prompt)
    pairs with continuous batching (model/generation.py).
    """

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
        # How generation runs on this model (cache, decode step, measured choices): model/runner.py.
        self.runner = Runner(self)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        compile: bool = False,
    ) -> PaliGemma:
        """Load a Hugging Face PaliGemma 1 or 2 checkpoint folder (safetensors only).

        dtype None means float32 on a CPU and bfloat16 on a GPU; float16 is refused (Gemma's activations overflow
        it). compile=True lets the runner compile the decode step (model/compiled.py): slower to start, and kept
        only where it is faster to generate.
        """
        model = load_pretrained(cls, path, dtype=dtype, device=device)
        model.runner = Runner(model, compile=compile)
        return model

    def __getstate__(self) -> dict:
        """Pickling and deep copies leave the runner out (its cache and timings belong to this object): the copy
        gets a fresh runner with the same options."""
        state = self.__dict__.copy()
        runner = state.pop("runner", None)
        state["_runner_options"] = (runner.compile, runner.measure) if runner is not None else (False, True)
        return state

    def __setstate__(self, state: dict) -> None:
        compile, measure = state.pop("_runner_options", (False, True))
        super().__setstate__(state)
        self.runner = Runner(self, compile=compile, measure=measure)

    @classmethod
    def check_pretrained(cls, path: str | Path) -> PaliGemmaConfig:
        """Check a checkpoint folder as from_pretrained would (config, tokenizer, every weights file's header)
        without reading the weights: fast, so jobs run it before they start any workers."""
        return check_checkpoint(path, cls)

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return self.language_model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype."""
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

    def head_weight(self) -> torch.Tensor:
        """The output projection [V, C]: lm_head, or the token embedding when they are tied."""
        return self.lm_head.weight if hasattr(self, "lm_head") else self.language_model.embed_tokens.weight

    def lm_logits(self, h: torch.Tensor, project: Projections = PLAIN) -> torch.Tensor:
        """Logits [..., V] of hidden states [..., C] (`project`: see gemma.Projections)."""
        logits = project.head(h, self.head_weight())
        cap = self.config.text.final_logit_softcap
        return torch.tanh(logits / cap) * cap if cap else logits

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.config.text
        return rope_tables(positions, t.head_dim, t.rope_theta, self.dtype)

    def _masks(
        self, valid: torch.Tensor, q_index: torch.Tensor, prefix: torch.Tensor | None, always: bool = False
    ) -> dict[str, torch.Tensor | None]:
        """Masks for global and sliding layers; None where nothing is masked, so SDPA can take its fastest path
        (unless `always`: finding that out costs a host synchronization, which a compiled step avoids)."""
        full = make_attention_mask(valid, q_index, prefix)
        masks = {"full": full if always or not bool(full.all()) else None}
        if "sliding" in self.config.text.layer_types:
            sliding = make_attention_mask(valid, q_index, prefix, self.config.text.sliding_window)
            masks["sliding"] = sliding if always or not bool(sliding.all()) else None
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
        images_first: bool = False,
    ) -> torch.Tensor:
        """The final-normed hidden states [B, T, C] of `forward`, before the vocabulary projection.

        Training takes these so that it projects only the answer positions onto the vocabulary. images_first:
        every row starts with its <image> tokens (right padding, as training batches are laid out), which lets
        the image features be put in place without looking at the ids, and so without a host synchronization.
        """
        input_ids = input_ids.to(self.device)
        T = input_ids.shape[1]
        valid = torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is not None:
            valid = attention_mask.to(self.device).bool()
        prefix = valid if token_type_ids is None else valid & (token_type_ids.to(self.device) == 0)
        if images_first and pixel_values is not None:
            features = self.image_features(pixel_values)
            text = self.language_model.embed(input_ids[:, features.shape[1] :])
            x = torch.cat([features.to(text.dtype), text], dim=1)
            masks = self._masks(valid, torch.arange(T, device=self.device), prefix, always=True)
        else:
            x = self.embed_inputs(input_ids, pixel_values)
            masks = self._masks(valid, torch.arange(T, device=self.device), prefix)
        rope = self._rope(valid.long().cumsum(1))
        return self.language_model(x, rope, masks)

    # ---- generation: prefill prompts into cache slots, then one-token steps over every slot ----------------------

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """float[N, 3, S, S] -> the projected patch features float[N, n_image, C] that stand in for <image> tokens."""
        return self.multi_modal_projector(self.vision_tower(pixel_values.to(self.device, self.dtype)))

    def prefill(
        self,
        input_ids: torch.Tensor,
        features: torch.Tensor,
        write: CacheWrite,
        lengths: torch.Tensor | None = None,
        project: Projections = PLAIN,
    ) -> torch.Tensor:
        """Prompts long[g, T] (n_image <image> ids, then the text; right-padded when `lengths` [g] says some are
        shorter) with their images' features [g, n_image, C]: run them bidirectionally, store their keys and values
        in cache slots `write.slots` (positions 0..T-1), and return the next-token logits [g, V] of each row's last
        real token.

        The whole prompt is the bidirectional prefix, sliding-window layers included (as transformers computes
        it), so prompts of one length need no mask at all and attention takes its fastest path; shorter rows only
        hide their padding keys, with a mask [g, 1, 1, T] that broadcasts over heads and queries. The padding's
        keys land in cache positions that decode steps overwrite before any query can see them.
        """
        n = features.shape[1]
        text = self.language_model.embed(input_ids[:, n:].to(self.device))
        x = torch.cat([features.to(text.dtype), text], dim=1)
        g, T = x.shape[0], x.shape[1]
        positions = torch.arange(1, T + 1, device=self.device)[None]  # 1-based, as transformers counts them
        if lengths is None:
            masks, last = {}, torch.full((g,), T - 1, device=self.device)
        else:
            lengths = lengths.to(self.device)
            keys = (torch.arange(T, device=self.device)[None] < lengths[:, None])[:, None, None, :]
            masks, last = {"full": keys, "sliding": keys}, lengths - 1
        h = self.language_model(x, self._rope(positions), masks, write, last, project)
        return self.lm_logits(h[:, -1], project)

    def decode_step(
        self, tokens: torch.Tensor, lengths: torch.Tensor, cache: KVCache, project: Projections = PLAIN
    ) -> torch.Tensor:
        """One token per cache slot: tokens long[B] written at positions lengths[B] (each slot's own), attending to
        positions 0..lengths[b]; returns logits [B, V]. No host synchronization and no shape that depends on the
        data, so it compiles with fullgraph=True and replays as a CUDA graph. `project`: see gemma.Projections."""
        t = self.config.text
        x = self.language_model.embed(tokens[:, None])
        rope = self._rope((lengths + 1)[:, None])
        masks = {"full": step_mask(lengths, cache.max_len)}
        if "sliding" in t.layer_types:
            masks["sliding"] = step_mask(lengths, cache.max_len, t.sliding_window)
        h = self.language_model(x, rope, masks, CacheWrite(cache, positions=lengths), project=project)
        return self.lm_logits(h[:, -1], project)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """A zeroed KV cache of `batch` slots and `max_len` positions, in the model's dtype and device."""
        t = self.config.text
        return KVCache(t.num_layers, batch, t.num_kv_heads, max_len, t.head_dim, self.dtype, self.device)

    def generate(
        self, images: list, prompts: list[str] | str, max_new_tokens: int = 64, **options
    ) -> list[str] | list[Generation]:
        """Text for each (image, prompt) pair. Options (see `model.generation.generate`): do_sample, temperature,
        top_p, seed, return_logprobs, stop_at_eos, batch_size (pairs in flight), on_result (called as each pair
        is done)."""
        from .generation import generate

        return generate(self, images, prompts, max_new_tokens=max_new_tokens, **options)
