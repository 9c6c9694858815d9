"""Generation with continuous batching: at most `batch_size` rows in flight, a finished row's slot refilled at once.

The loop keeps the two things nano-vllm keeps apart:

- **Scheduling** (`Engine.run`): which requests run. Waiting requests are admitted into free cache slots a
  group at a time (once a quarter of the slots are free), prefilled in groups of similar prompt length
  (right-padded, the padding masked), their images through the vision tower once per distinct image. Finished
  rows are collected and their slots handed to the next requests, so a batch never waits for its longest answer.
- **The step** (`PaliGemma.decode_step`): one token for every slot, at each slot's own position, on a cache of
  fixed shape, with no host synchronization. It is what `compile=True` compiles; end-of-sequence and finished
  rows are looked at between steps (every step on a CPU, where that costs nothing; every few steps on a GPU,
  where it would stall the queue).

Every row's computation depends on its own image, prompt and tokens only, so a row's answer is the one it would
get alone (greedy decoding), whatever else is in flight.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from .attention import CacheWrite, KVCache

if TYPE_CHECKING:
    from PIL import Image

    from .config import PaliGemmaConfig
    from .image_processing import ImageProcessor
    from .tokenizer import PromptTokenizer


class Decoder(Protocol):
    """What generation needs of a model (PaliGemma is one): prefill prompts into cache slots, step every slot."""

    config: PaliGemmaConfig
    tokenizer: PromptTokenizer
    image_processor: ImageProcessor
    device: torch.device
    step: Callable[[torch.Tensor, torch.Tensor, KVCache], torch.Tensor]

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor: ...

    def prefill(self, input_ids: torch.Tensor, features: torch.Tensor, write: CacheWrite) -> torch.Tensor: ...

    def new_cache(self, batch: int, max_len: int) -> KVCache: ...


@dataclass
class Generation:
    """One answer with its tokens. `"".join(tokens) == text`; logprobs are natural-log probabilities of each
    token under the model's own distribution (before temperature and top-p), the raw material of scores."""

    text: str
    token_ids: list[int]
    tokens: list[str]
    logprobs: list[float]
    stopped_at_eos: bool


def sample_next(
    logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Next token ids [B] from float32 logits [B, V]: greedy, or temperature + nucleus (top-p) sampling."""
    if not do_sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest head of the distribution whose mass reaches top_p (the top token always stays).
        outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def check_options(max_new_tokens: int, do_sample: bool, temperature: float, top_p: float) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


# Compiled steps are specialized to their shapes: slots and cache lengths come in these steps so that a stream of
# calls compiles a handful of graphs. Eager steps use the exact sizes (no wasted rows or positions).
SLOT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LENGTH_BUCKET = 64
# A prefill runs at most this many tokens at once (rows x prompt length): enough for full matrix products, and a
# bound on activation memory however many rows are admitted together (a 896-px prompt is about 4,100 tokens).
PREFILL_TOKENS = 16384
# Finished rows' slots are refilled once this share of the slots is free (or nothing else waits): prefilling a few
# rows together costs little more than one, while a free slot decodes nothing.
ADMIT_FREE = 0.25


def rows_that_fit(model: Decoder, prompt_tokens: int, max_new_tokens: int, share: float = 0.5) -> int:
    """How many rows can be in flight on the model's GPU: its free memory (a `share` of it) over one row's KV cache
    and prefill activations. On a CPU memory is rarely what limits a batch: 64."""
    if model.device.type != "cuda":
        return 64
    t = model.config.text
    itemsize = torch.tensor([], dtype=model.dtype).element_size()
    length = _round_up(prompt_tokens + max_new_tokens, LENGTH_BUCKET)
    kv = 2 * t.num_layers * t.num_kv_heads * t.head_dim * length * itemsize
    activations = 4 * prompt_tokens * max(t.hidden_size, t.intermediate_size) * itemsize
    free, _ = torch.cuda.mem_get_info(model.device)
    return int(max(1, min(SLOT_BUCKETS[-1], free * share // (kv + activations))))


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


@torch.inference_mode()
def generate(
    model: Decoder,
    images: list[Image.Image],
    prompts: list[str] | str,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    return_logprobs: bool = False,
    stop_at_eos: bool = True,
    batch_size: int | None = None,
    on_result: Callable[[int, Generation], None] | None = None,
) -> list[str] | list[Generation]:
    """Answer each (image, prompt) pair; any number of pairs, at most `batch_size` in flight (default: all).

    Each row stops at its first <eos> (which is not part of the text); <loc>/<seg> tokens stay in the text.
    With `return_logprobs`, each answer comes as a `Generation` with its tokens and their log-probabilities.
    `stop_at_eos=False` always runs `max_new_tokens` steps (benchmarks use it to time a fixed amount of work).
    `on_result(i, generation)` is called as soon as pair i is done (the answers still come back in input order),
    so a caller can parse answers while the rest are generated.
    """
    if model.tokenizer is None or model.image_processor is None:
        raise ValueError("generate needs the tokenizer and image processor that from_pretrained attaches")
    if isinstance(prompts, str):
        prompts = [prompts] * len(images)
    if len(prompts) != len(images):
        raise ValueError(f"expected one prompt per image but got {len(prompts)} prompts for {len(images)} images")
    check_options(max_new_tokens, do_sample, temperature, top_p)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not images:
        return []
    pixels, image_of = distinct_images(model.image_processor, images)
    n_image = model.config.num_image_tokens
    ids = [model.tokenizer.encode_prompt(p, n_image) for p in prompts]
    engine = Engine(model, max_new_tokens, do_sample, temperature, top_p, seed, stop_at_eos, return_logprobs)
    results = engine.run(ids, image_of, pixels, batch_size or len(ids), on_result)
    return results if return_logprobs else [r.text for r in results]


def distinct_images(processor: ImageProcessor, images: list) -> tuple[torch.Tensor, list[int]]:
    """Pixel values of each distinct image [U, 3, S, S] and, per pair, the index of its image.

    Pairs that share an image (several prompts about one picture, as `--per-class` asks) share its pixels, and
    so its pass through the vision tower. Only the tower's output can be shared: the prompt is attended
    bidirectionally with the image tokens, so their keys and values depend on the prompt. The same object is
    recognized at once; equal copies (the label job decodes each row's image on its own) by a checksum of the
    resized bytes, confirmed byte for byte.
    """
    by_object: dict[int, int] = {}
    by_checksum: dict[int, list[int]] = {}
    resized: list[np.ndarray] = []
    image_of = []
    for image in images:
        index = by_object.get(id(image))
        if index is None:
            pixels = processor.resized(image)
            candidates = by_checksum.setdefault(zlib.crc32(np.ascontiguousarray(pixels)), [])
            index = next((i for i in candidates if np.array_equal(resized[i], pixels)), None)
            if index is None:
                index = len(resized)
                resized.append(pixels)
                candidates.append(index)
            by_object[id(image)] = index
        image_of.append(index)
    return torch.stack([processor.normalize(p) for p in resized]), image_of


class Engine:
    """One generate call's state: the cache, the slots and what each slot has produced so far."""

    def __init__(self, model: Decoder, max_new_tokens: int, do_sample: bool, temperature: float, top_p: float,
                 seed: int | None, stop_at_eos: bool, return_logprobs: bool):  # fmt: skip
        self.model = model
        self.tok = model.tokenizer
        self.device = model.device
        self.max_new = max_new_tokens
        self.sampling = (do_sample, temperature, top_p)
        self.generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        self.stop_at_eos, self.return_logprobs = stop_at_eos, return_logprobs
        self.compiled = getattr(model, "compiled", False)
        # Looking at finished rows needs the host to wait for the device; on a GPU that would drain the queue of
        # launched kernels every step, so it looks every few steps (a finished row idles at most that long).
        self.check_every = 8 if self.device.type == "cuda" else 1

    # ---- sizes and the cache -----------------------------------------------------------------------------------

    def sizes(self, ids: list[list[int]], batch_size: int) -> tuple[int, int]:
        slots = min(batch_size, len(ids))
        length = max(len(i) for i in ids) + self.max_new
        if self.compiled:
            slots = next((b for b in SLOT_BUCKETS if b >= slots), slots)
            length = _round_up(length, LENGTH_BUCKET)
        return slots, length

    def cache(self, slots: int, length: int) -> KVCache:
        """The model's cache for these sizes, allocated once and kept: a compiled step (and a CUDA graph) finds
        its cache at the same address on every call. A call with other sizes replaces it."""
        cache = getattr(self.model, "_kv_cache", None)
        if cache is None or (cache.batch, cache.max_len) != (slots, length):
            self.model._kv_cache = None  # free the old one before allocating
            cache = self.model.new_cache(slots, length)
            if self.compiled:
                for tensor in (*cache.k, *cache.v):
                    torch._dynamo.mark_static_address(tensor)
            self.model._kv_cache = cache
        return cache

    # ---- choosing tokens ---------------------------------------------------------------------------------------

    def pick(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = logits.float()
        nxt = sample_next(logits, *self.sampling, self.generator)
        lp = torch.log_softmax(logits, -1).gather(1, nxt[:, None])[:, 0] if self.return_logprobs else None
        return nxt, lp

    # ---- the loop ----------------------------------------------------------------------------------------------

    def run(self, ids: list[list[int]], image_of: list[int], pixels: torch.Tensor, batch_size: int,
            on_result: Callable[[int, Generation], None] | None) -> list[Generation]:  # fmt: skip
        n_slots, max_len = self.sizes(ids, batch_size)
        cache = self.cache(n_slots, max_len)
        dev = self.device
        tokens = torch.zeros(n_slots, dtype=torch.long, device=dev)  # the token each slot feeds next
        lengths = torch.zeros(n_slots, dtype=torch.long, device=dev)  # where each slot writes next
        steps = torch.zeros(n_slots, dtype=torch.long, device=dev)  # tokens each slot has generated
        active = torch.zeros(n_slots, dtype=torch.bool, device=dev)
        out_ids = torch.zeros(n_slots, self.max_new, dtype=torch.long, device=dev)
        out_lp = torch.zeros(n_slots, self.max_new, dtype=torch.float32, device=dev)
        eos = self.tok.eos_id

        waiting = deque(range(len(ids)))
        owner: list[int | None] = [None] * n_slots  # which request each slot holds
        remaining_uses = [0] * len(pixels)
        for i in image_of:
            remaining_uses[i] += 1
        features: dict[int, torch.Tensor] = {}
        results: list[Generation | None] = [None] * len(ids)

        def record(slots: torch.Tensor, nxt: torch.Tensor, lp: torch.Tensor | None, alive: torch.Tensor) -> None:
            """Store this step's token of the given slots and retire the rows it ends."""
            idx = steps[slots].clamp(max=self.max_new - 1)
            out_ids.index_put_((slots, idx), torch.where(alive, nxt, out_ids[slots, idx]))
            if lp is not None:
                out_lp.index_put_((slots, idx), torch.where(alive, lp, out_lp[slots, idx]))
            steps[slots] += alive.long()
            ended = alive & (steps[slots] >= self.max_new)
            if self.stop_at_eos:
                ended |= alive & (nxt == eos)
            active[slots] = alive & ~ended
            tokens[slots] = torch.where(alive, nxt, tokens[slots])

        def admit() -> None:
            free = [s for s in range(n_slots) if owner[s] is None]
            take = [waiting.popleft() for _ in range(min(len(free), len(waiting)))]
            if not take:
                return
            needed = sorted({image_of[r] for r in take} - set(features))
            for start in range(0, len(needed), 64):  # the tower once per distinct image, in batches
                chunk = needed[start : start + 64]
                host = pixels[chunk]
                if dev.type == "cuda":  # page-locked memory lets the copy overlap the GPU's work
                    host = host.pin_memory()
                out = self.model.image_features(host.to(dev, non_blocking=True))
                features.update(zip(chunk, out, strict=True))
            part: list[tuple[int, int]] = []
            for request, slot in sorted(zip(take, free, strict=False), key=lambda rs: len(ids[rs[0]])):
                owner[slot] = request
                # One prefill for prompts of similar lengths (right-padded, the padding masked): a prefill of many
                # rows costs little more than of one; a new group starts when padding would exceed a quarter of
                # the group's tokens or the group would pass PREFILL_TOKENS.
                longest = len(ids[request])
                if part and (longest * (len(part) + 1) > PREFILL_TOKENS or 4 * len(ids[part[0][0]]) < 3 * longest):
                    prefill_group(part)
                    part = []
                part.append((request, slot))
            if part:
                prefill_group(part)

        def prefill_group(part: list[tuple[int, int]]) -> None:
            slots = torch.tensor([s for _, s in part], device=dev)
            sizes = [len(ids[r]) for r, _ in part]
            longest = max(sizes)
            prompt = torch.tensor([ids[r] + [self.tok.pad_id] * (longest - len(ids[r])) for r, _ in part])
            feats = torch.stack([features[image_of[r]] for r, _ in part])
            padded = None if min(sizes) == longest else torch.tensor(sizes)
            logits = self.model.prefill(prompt.to(dev), feats, CacheWrite(cache, slots=slots), padded)
            lengths[slots] = torch.tensor(sizes, device=dev)
            steps[slots] = 0
            nxt, lp = self.pick(logits)
            record(slots, nxt, lp, torch.ones(len(part), dtype=torch.bool, device=dev))
            for r, _ in part:
                remaining_uses[image_of[r]] -= 1
                if remaining_uses[image_of[r]] == 0:
                    del features[image_of[r]]  # every pair of this image is prefilled

        def collect() -> None:
            """Hand finished rows to their requests and free their slots."""
            alive = active.tolist()
            done = [s for s in range(n_slots) if owner[s] is not None and not alive[s]]
            if not done:
                return
            counts = steps[done].tolist()
            rows_ids = out_ids[done].tolist()
            rows_lp = out_lp[done].tolist() if self.return_logprobs else None
            for k, slot in enumerate(done):
                request = owner[slot]
                owner[slot] = None
                row = rows_ids[k][: counts[k]]
                stopped = self.stop_at_eos and bool(row) and row[-1] == eos
                n = len(row) - 1 if stopped else len(row)
                gen = Generation(
                    text=self.tok.decode(row[:n]),
                    token_ids=row[:n],
                    tokens=self.tok.pieces(row[:n]) if self.return_logprobs else [],
                    logprobs=rows_lp[k][:n] if rows_lp is not None else [],
                    stopped_at_eos=stopped,
                )
                results[request] = gen
                if on_result is not None:
                    on_result(request, gen)

        step_fn = self.model.step
        while waiting or any(o is not None for o in owner):
            collect()
            free = sum(o is None for o in owner)
            running = n_slots - free
            # Admit in groups rather than one row at a time (a prefill of many rows costs little more than of
            # one), unless nothing runs or every waiting request fits now.
            if waiting and free and (running == 0 or free >= ADMIT_FREE * n_slots or len(waiting) <= free):
                admit()
                collect()  # rows that ended at their first token
            if not any(o is not None for o in owner):
                continue
            for _ in range(self.check_every):
                alive = active.clone()
                logits = step_fn(tokens, lengths, cache)
                lengths += alive.long()
                lengths.clamp_(max=max_len - 1)
                nxt, lp = self.pick(logits)
                record(cache.rows, nxt, lp, alive)
        return results  # type: ignore[return-value]
