"""How steps run: the runner owns the KV cache, the decode step (eager or compiled) and each slot's device state.

The scheduler (model/scheduler.py) decides which requests run; the runner does it on the device:

- `start` sizes the cache for a call (allocated once and kept, so a compiled step and a CUDA graph find it at the
  same address every call) and picks the step for that (slots, length) bucket;
- `encode` runs the vision tower on a call's distinct images, `prefill` puts a group of prompts into their slots;
- `decode` runs one token for every slot, at each slot's own position, with no host synchronization inside, and
  records each slot's token on the device;
- `finished` is the only place the host waits for the device: it copies out the rows that have ended.

A PaliGemma holds its runner (`model.runner`); nothing is patched onto the model.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .attention import CacheWrite, KVCache

if TYPE_CHECKING:
    from .paligemma import PaliGemma
    from .sequence import Sequence

# Compiled steps are specialized to their shapes: slots and cache lengths come in these steps so that a stream of
# calls compiles a handful of graphs. Eager steps use the exact sizes (no wasted rows or positions).
SLOT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LENGTH_BUCKET = 64
# The vision tower runs on at most this many images at once.
VISION_BATCH = 64


def round_up(n: int, step: int) -> int:
    return -(-n // step) * step


# Memory layouts of the decoder's projection weights. "row-major" is [out, in] as stored (and as transformers
# multiplies); "column-major" is the same tensor transposed in memory (strides (1, out)). Values never change.
LAYOUTS = ("row-major", "column-major")


def lay_out(weight: torch.Tensor, layout: str) -> torch.Tensor:
    """`weight` [out, in] with the same values in `layout`."""
    if layout == "row-major":
        return weight.contiguous()
    if layout == "column-major":
        return weight.t().contiguous().t()
    raise ValueError(f"unknown weight layout {layout!r}; use one of {', '.join(LAYOUTS)}")


def decoder_linears(model: PaliGemma) -> list[nn.Linear]:
    """The matrix products of a decode step: every projection of the text decoder, and an untied lm_head."""
    linears = [m for m in model.language_model.modules() if isinstance(m, nn.Linear)]
    if hasattr(model, "lm_head"):
        linears.append(model.lm_head)
    return linears


@dataclass(frozen=True)
class Sampling:
    """How a call chooses tokens and when its rows end."""

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_at_eos: bool = True
    return_logprobs: bool = False


@dataclass(frozen=True)
class Finished:
    """A row that has ended: its slot, its tokens (without the <eos> it stopped at) and their log-probabilities."""

    slot: int
    token_ids: list[int]
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


class Slots:
    """Each slot's state on the device during one call: the token it feeds next, where it writes next, how many
    tokens it has generated, whether it is still generating, and its tokens and log-probabilities so far."""

    def __init__(self, n: int, max_new: int, device: torch.device):
        self.tokens = torch.zeros(n, dtype=torch.long, device=device)
        self.lengths = torch.zeros(n, dtype=torch.long, device=device)
        self.steps = torch.zeros(n, dtype=torch.long, device=device)
        self.active = torch.zeros(n, dtype=torch.bool, device=device)
        self.out_ids = torch.zeros(n, max_new, dtype=torch.long, device=device)
        self.out_lp = torch.zeros(n, max_new, dtype=torch.float32, device=device)


class Runner:
    """The mechanism of generation on one model: its cache, its decode step, and the state of its slots.

    compile: compile the decode step (model/compiled.py); slots and lengths then come in buckets.
    """

    def __init__(self, model: PaliGemma, compile: bool = False):
        self._model = weakref.ref(model)  # the model holds its runner; a weak link back keeps them free of a cycle
        self.compile = compile
        self.cache: KVCache | None = None
        self.compiled_step: Callable | None = None
        self.layout = "row-major"  # as loaded
        self.head: torch.Tensor | None = None  # a tied output embedding in `layout`, when that is not row-major
        self.sampling = Sampling(max_new_tokens=1)
        self.slots: Slots | None = None
        self.generator: torch.Generator | None = None

    @property
    def model(self) -> PaliGemma:
        model = self._model()
        if model is None:
            raise RuntimeError("the model of this runner is gone")
        return model

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def check_every(self) -> int:
        """Decode steps between looks at finished rows. Looking needs the host to wait for the device; on a GPU
        that would drain the queue of launched kernels every step, so it looks every few steps (a finished row
        idles at most that long). On a CPU it costs nothing."""
        return 8 if self.device.type == "cuda" else 1

    # ---- sizes and the cache -----------------------------------------------------------------------------------

    def sizes(self, requests: int, longest_prompt: int, max_new_tokens: int, batch_size: int) -> tuple[int, int]:
        """(slots, cache length) for a call: exact when eager, rounded up to buckets when compiled."""
        slots = min(batch_size, requests)
        length = longest_prompt + max_new_tokens
        if self.compile:
            slots = next((b for b in SLOT_BUCKETS if b >= slots), slots)
            length = round_up(length, LENGTH_BUCKET)
        return slots, length

    def allocate(self, slots: int, length: int) -> KVCache:
        """The cache for these sizes, allocated once and kept: a compiled step (and a CUDA graph) finds its cache at
        the same address on every call. A call with other sizes replaces it."""
        cache = self.cache
        if cache is None or (cache.batch, cache.max_len) != (slots, length):
            self.cache = None  # free the old one before allocating
            cache = self.model.new_cache(slots, length)
            if self.compile:
                for tensor in (*cache.k, *cache.v):
                    torch._dynamo.mark_static_address(tensor)
            self.cache = cache
        return cache

    def start(self, slots: int, length: int, sampling: Sampling) -> None:
        """Get ready for a call: its cache, fresh slot state, its sampling options and random generator."""
        if self.device.type == "cpu":
            self.use_layout("column-major")
        self.allocate(slots, length)
        self.sampling = sampling
        self.slots = Slots(slots, sampling.max_new_tokens, self.device)
        seed = sampling.seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None

    def use_layout(self, layout: str) -> None:
        """Lay the decoder's projection weights out in `layout`. The parameters stay the same objects (an
        optimizer holding them still trains them); a tied output embedding keeps its rows for the token lookup
        and the runner keeps a copy in `layout` for the output projection."""
        if layout == self.layout:
            return
        model = self.model
        with torch.inference_mode(False), torch.no_grad():  # the weights must stay usable for training
            for linear in decoder_linears(model):
                linear.weight.data = lay_out(linear.weight.data, layout)
            tied = not hasattr(model, "lm_head")
            self.head = lay_out(model.head_weight(), layout) if tied and layout != "row-major" else None
        self.layout = layout

    def step_fn(self) -> Callable[[torch.Tensor, torch.Tensor, KVCache], torch.Tensor]:
        """The decode step this runner uses: the model's own, or its compiled version."""
        model, head = self.model, self.head

        def step(tokens: torch.Tensor, lengths: torch.Tensor, cache: KVCache) -> torch.Tensor:
            return model.decode_step(tokens, lengths, cache, head)

        if not self.compile:
            return step
        if self.compiled_step is None:
            from .compiled import compile_step

            self.compiled_step = compile_step(step, self.device)
        return self.compiled_step

    # ---- running -----------------------------------------------------------------------------------------------

    def encode(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Projected patch features of each image of pixels [U, 3, S, S] (the vision tower in batches)."""
        out: list[torch.Tensor] = []
        for start in range(0, len(pixels), VISION_BATCH):
            host = pixels[start : start + VISION_BATCH]
            if self.device.type == "cuda":  # page-locked memory lets the copy overlap the GPU's work
                host = host.pin_memory()
            out.extend(self.model.image_features(host.to(self.device, non_blocking=True)))
        return out

    def prefill(self, group: Iterable[Sequence], features: list[torch.Tensor]) -> None:
        """Run a group's prompts (right-padded to the longest, the padding masked) into their slots, and record
        each row's first token."""
        group = list(group)
        dev, pad = self.device, self.model.tokenizer.pad_id
        slots = torch.tensor([s.slot for s in group], device=dev)
        sizes = [s.prompt_len for s in group]
        longest = max(sizes)
        prompt = torch.tensor([s.prompt_ids + [pad] * (longest - s.prompt_len) for s in group])
        padded = None if min(sizes) == longest else torch.tensor(sizes)
        write = CacheWrite(self.cache, slots=slots)
        logits = self.model.prefill(prompt.to(dev), torch.stack(features), write, padded, self.head)
        state = self.slots
        state.lengths[slots] = torch.tensor(sizes, device=dev)
        state.steps[slots] = 0
        self.record(slots, logits, torch.ones(len(group), dtype=torch.bool, device=dev))

    def decode(self) -> None:
        """`check_every` decode steps over every slot (finished and free slots compute too, their tokens unused)."""
        state, cache, step = self.slots, self.cache, self.step_fn()
        for _ in range(self.check_every):
            alive = state.active.clone()
            logits = step(state.tokens, state.lengths, cache)
            state.lengths += alive.long()
            state.lengths.clamp_(max=cache.max_len - 1)
            self.record(cache.rows, logits, alive)

    def record(self, slots: torch.Tensor, logits: torch.Tensor, alive: torch.Tensor) -> None:
        """Choose the next token of the given slots, store it for those still generating, and mark the rows it
        ends (their budget spent, or <eos> when the call stops there). All on the device."""
        sampling, state = self.sampling, self.slots
        logits = logits.float()
        nxt = sample_next(logits, sampling.do_sample, sampling.temperature, sampling.top_p, self.generator)
        idx = state.steps[slots].clamp(max=sampling.max_new_tokens - 1)
        state.out_ids.index_put_((slots, idx), torch.where(alive, nxt, state.out_ids[slots, idx]))
        if sampling.return_logprobs:
            lp = torch.log_softmax(logits, -1).gather(1, nxt[:, None])[:, 0]
            state.out_lp.index_put_((slots, idx), torch.where(alive, lp, state.out_lp[slots, idx]))
        state.steps[slots] += alive.long()
        ended = alive & (state.steps[slots] >= sampling.max_new_tokens)
        if sampling.stop_at_eos:
            ended |= alive & (nxt == self.model.tokenizer.eos_id)
        state.active[slots] = alive & ~ended
        state.tokens[slots] = torch.where(alive, nxt, state.tokens[slots])

    def finished(self, occupied: Iterable[int]) -> list[Finished]:
        """The rows among the `occupied` slots that have ended, copied to the host (lowest slot first)."""
        state = self.slots
        alive = state.active.tolist()
        done = sorted(s for s in occupied if not alive[s])
        if not done:
            return []
        counts = state.steps[done].tolist()
        rows_ids = state.out_ids[done].tolist()
        rows_lp = state.out_lp[done].tolist() if self.sampling.return_logprobs else None
        eos = self.model.tokenizer.eos_id
        out = []
        for k, slot in enumerate(done):
            row = rows_ids[k][: counts[k]]
            stopped = self.sampling.stop_at_eos and bool(row) and row[-1] == eos
            n = len(row) - 1 if stopped else len(row)
            out.append(Finished(slot, row[:n], rows_lp[k][:n] if rows_lp is not None else [], stopped))
        return out
