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

import logging
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .attention import CacheWrite, KVCache
from .gemma import PLAIN, Projections
from .layouts import (
    apply_layout,
    candidate_layouts,
    decoder_linears,
    time_prefill_threads,
    using_threads,
    with_threads,
)
from .tuning import Choice, StepOption, best_ms, choose, thread_options, time_candidates

if TYPE_CHECKING:
    from .paligemma import PaliGemma
    from .sequence import Sequence

# Compiled steps are specialized to their shapes: slots and cache lengths come in these steps so that a stream of
# calls compiles a handful of graphs. Eager steps use the exact sizes (no wasted rows or positions).
SLOT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LENGTH_BUCKET = 64
# The vision tower runs on at most this many images at once.
VISION_BATCH = 64

logger = logging.getLogger(__name__)


def round_up(n: int, step: int) -> int:
    """n rounded up to a multiple of step."""
    return -(-n // step) * step


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

    compile: may compile the decode step (model/compiled.py); slots and lengths then come in buckets.
    measure: at the first call of each (slots, length) bucket, time the candidates (weight layout once per
    runner, then eager or compiled step and thread count) and keep the fastest (model/tuning.py); without it,
    the step is compiled exactly when `compile` says, on torch's threads, with the weights as they are.
    """

    def __init__(self, model: PaliGemma, compile: bool = False, measure: bool = True):
        self._model = weakref.ref(model)  # the model holds its runner; a weak link back keeps them free of a cycle
        self.compile, self.measure = compile, measure
        self.choices: dict[tuple[int, int], Choice] = {}  # per (slots, length) bucket
        self.choice: Choice | None = None  # the current call's
        self.layout_ms: dict[str, float] | None = None  # the layouts' timings, once measured
        self.prefill_threads: int | None = None  # threads of prefills and the vision tower, once measured
        self.prefill_ms: dict[str, float] | None = None
        self.cache: KVCache | None = None
        self.compiled_step: Callable | None = None
        self.layout, self.layout_rows = "row-major", 8  # as loaded
        self.project: Projections = PLAIN  # how the eager step and prefills compute the decoder's linear maps
        self.weights_seen: list[tuple[int, int]] = []  # each weight's (address, version) when last laid out
        self.sampling = Sampling(max_new_tokens=1)
        self.slots: Slots | None = None
        self.generator: torch.Generator | None = None

    @property
    def model(self) -> PaliGemma:
        """The model this runner runs (held weakly: the model holds its runner)."""
        model = self._model()
        if model is None:
            raise RuntimeError("the model of this runner is gone")
        return model

    @property
    def device(self) -> torch.device:
        """The model's device."""
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
        self.follow_weights()
        self.allocate(slots, length)
        self.sampling = sampling
        self.slots = Slots(slots, sampling.max_new_tokens, self.device)
        seed = sampling.seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        self.choice = self.choice_for(slots, length)

    def sync(self) -> None:
        """Wait for the device (a GPU's queue) before reading a clock."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def choice_for(self, slots: int, length: int) -> Choice:
        """The choice for the bucket of these sizes, measured the first time the bucket is seen (and logged once).
        Eager calls have exact sizes but share their bucket's choice: a stream of calls of slightly different
        lengths is timed once, not at every call."""
        key = (next((b for b in SLOT_BUCKETS if b >= slots), slots), round_up(length, LENGTH_BUCKET))
        if key not in self.choices:
            self.choices[key] = self.tune(slots, length)
            logger.info("engine choice: %s", self.choices[key].describe())
        return self.choices[key]

    def tune(self, slots: int, length: int) -> Choice:
        """Time the candidates and keep the fastest: once per runner on a CPU, the weight layout (on whole decode
        steps, at each thread count) and the threads of prefills; for each bucket, the step (eager per thread
        count, compiled when allowed)."""
        threads = torch.get_num_threads()
        if not self.measure:
            return Choice(slots, length, self.layout, StepOption(self.compile, threads), prefill_threads=threads)
        timed: dict[StepOption, list[float]] = {}
        if self.device.type == "cpu" and self.layout_ms is None:
            by_layout = self.time_layouts(slots)
            self.use_layout(choose(by_layout)[0], slots)
            self.layout_ms = best_ms({f"{lay}, {t} threads": v for (lay, t), v in by_layout.items()})
            timed = {StepOption(False, t): v for (lay, t), v in by_layout.items() if lay == self.layout}
            timings = time_prefill_threads(self.model, self.sync)
            self.prefill_threads, self.prefill_ms = choose(timings), best_ms(timings)
        step, step_ms, compile_s = self.tune_step(slots, timed)
        return Choice(slots, length, self.layout, step, self.layout_ms or {}, step_ms, compile_s,
                      self.prefill_threads or threads, self.prefill_ms or {})  # fmt: skip

    def dummy_step(self, compiled: bool) -> Callable[[], torch.Tensor]:
        """One decode step over this call's cache with placeholder tokens at position 0 (which the next prefills
        overwrite before any query sees it)."""
        slots = self.cache.batch
        tokens = torch.zeros(slots, dtype=torch.long, device=self.device)
        lengths = torch.zeros(slots, dtype=torch.long, device=self.device)
        step, cache = self.step_fn(compiled), self.cache
        return lambda: step(tokens, lengths, cache)

    def time_layouts(self, slots: int) -> dict[tuple[str, int], list[float]]:
        """Seconds of whole eager decode steps in each candidate layout (model/layouts.py), at each thread count,
        the thread counts timed in rounds within a layout. One layout is laid out at a time, so the copies a
        layout needs never pile up."""
        out: dict[tuple[str, int], list[float]] = {}
        for layout in candidate_layouts(self.model):
            self.use_layout(layout, slots)
            step = self.dummy_step(compiled=False)
            threads = thread_options(torch.get_num_threads())
            out.update(time_candidates({(layout, t): with_threads(t, step) for t in threads}, self.sync))
        return out

    def tune_step(
        self, slots: int, timed: dict[StepOption, list[float]]
    ) -> tuple[StepOption, dict[str, float], float | None]:
        """The fastest decode step on this bucket's cache, the timings (best call, ms) it was chosen from, and the
        seconds its compilation took (None when not compiled). `timed`: eager options already timed on this layout."""
        threads = torch.get_num_threads()
        cpu = self.device.type == "cpu"
        options = [StepOption(False, t) for t in (thread_options(threads) if cpu else (threads,))]
        options += [StepOption(True, threads)] if self.compile else []
        candidates, compile_s = {}, None
        for option in options:
            if option in timed:
                continue
            step = self.dummy_step(option.compiled)
            if option.compiled:  # the first call compiles (on CUDA the next ones capture the graph)
                start = time.perf_counter()
                for _ in range(3):
                    step()
                self.sync()
                compile_s = time.perf_counter() - start
            candidates[option] = with_threads(option.threads, step)
        timings = {**timed, **(time_candidates(candidates, self.sync) if candidates else {})}
        timings = {option: timings[option] for option in options}  # the reference first
        return choose(timings), best_ms(timings), compile_s

    def use_layout(self, layout: str, rows: int = 8) -> None:
        """Lay the decoder's weights out in `layout` (model/layouts.py), tuned for products of about `rows` rows."""
        self.project = apply_layout(self.model, layout, rows)
        self.layout, self.layout_rows = layout, rows
        self.weights_seen = self.weight_versions()

    def weight_versions(self) -> list[tuple[int, int]]:
        """Each weight's address and version counter: they change when the weights are trained or replaced."""
        model = self.model
        weights = [m.weight for m in decoder_linears(model)] + [model.head_weight()]
        return [(w.data_ptr(), w._version) for w in weights]

    def follow_weights(self) -> None:
        """If the weights changed since they were laid out (training between two calls), copies made from them
        (packed weights, a column-major head, a compiled step's frozen constants) are stale: make them again."""
        if not self.weights_seen:
            self.weights_seen = self.weight_versions()
        elif self.weight_versions() != self.weights_seen:
            self.compiled_step = None
            self.use_layout(self.layout, self.layout_rows)

    def step_fn(self, compiled: bool) -> Callable[[torch.Tensor, torch.Tensor, KVCache], torch.Tensor]:
        """The decode step: the model's own, or its compiled version (compiled once, kept)."""
        model, project = self.model, self.project

        def step(tokens: torch.Tensor, lengths: torch.Tensor, cache: KVCache) -> torch.Tensor:
            return model.decode_step(tokens, lengths, cache, project)

        if not compiled:
            return step

        def plain_step(tokens: torch.Tensor, lengths: torch.Tensor, cache: KVCache) -> torch.Tensor:
            return model.decode_step(tokens, lengths, cache)  # freezing packs the weights its own way

        if self.compiled_step is None:
            from .compiled import compile_step

            self.compiled_step = compile_step(plain_step, self.device)
        return self.compiled_step

    # ---- running -----------------------------------------------------------------------------------------------

    def encode(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Projected patch features of each image of pixels [U, 3, S, S] (the vision tower in batches)."""
        out: list[torch.Tensor] = []
        for start in range(0, len(pixels), VISION_BATCH):
            host = pixels[start : start + VISION_BATCH]
            if self.device.type == "cuda":  # page-locked memory lets the copy overlap the GPU's work
                host = host.pin_memory()
            with using_threads(self.choice.prefill_threads):
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
        with using_threads(self.choice.prefill_threads):
            logits = self.model.prefill(prompt.to(dev), torch.stack(features), write, padded, self.project)
        state = self.slots
        state.lengths[slots] = torch.tensor(sizes, device=dev)
        state.steps[slots] = 0
        self.record(slots, logits, torch.ones(len(group), dtype=torch.bool, device=dev))

    def decode(self) -> None:
        """`check_every` decode steps over every slot (finished and free slots compute too, their tokens unused)."""
        state, cache, option = self.slots, self.cache, self.choice.step
        step = self.step_fn(option.compiled)
        with using_threads(option.threads):
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
