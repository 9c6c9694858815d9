"""Generation with continuous batching: at most `batch_size` rows in flight, a finished row's slot refilled at once.

The loop is nano-vllm's, schedule -> run -> postprocess, with policy and mechanism kept apart:

- **Sequences** (model/sequence.py): one per (image, prompt) pair, with its ids, image, slot and answer.
- **The scheduler** (model/scheduler.py, plain Python): which requests run. Waiting requests are admitted into
  free cache slots a group at a time, prefilled in groups of similar prompt length, their images through the
  vision tower once per distinct image. Finished rows give their slots to the next requests, so a batch never
  waits for its longest answer.
- **The runner** (model/runner.py): how a step runs. It owns the cache and the decode step (one token for every
  slot, at each slot's own position, on a cache of fixed shape, with no host synchronization), which it may
  compile; finished rows are looked at between steps (every step on a CPU, where that costs nothing; every few
  steps on a GPU, where it would stall the queue).

Every row's computation depends on its own image, prompt and tokens only, so a row's answer is the one it would
get alone (greedy decoding), whatever else is in flight.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .runner import LENGTH_BUCKET, SLOT_BUCKETS, Finished, Runner, Sampling, round_up
from .scheduler import Scheduler
from .sequence import Sequence

if TYPE_CHECKING:
    from PIL import Image

    from .image_processing import ImageProcessor
    from .paligemma import PaliGemma


@dataclass
class Generation:
    """One answer with its tokens. `"".join(tokens) == text`; logprobs are natural-log probabilities of each
    token under the model's own distribution (before temperature and top-p), the raw material of scores."""

    text: str
    token_ids: list[int]
    tokens: list[str]
    logprobs: list[float]
    stopped_at_eos: bool


def check_options(
    images: int, prompts: int, max_new_tokens: int, do_sample: bool, temperature: float, top_p: float,
    batch_size: int | None,
) -> None:  # fmt: skip
    """Refuse generation arguments that cannot work, naming the argument."""
    if prompts != images:
        raise ValueError(f"expected one prompt per image but got {prompts} prompts for {images} images")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def rows_that_fit(model: PaliGemma, prompt_tokens: int, max_new_tokens: int, share: float = 0.5) -> int:
    """How many rows can be in flight on the model's GPU: its free memory (a `share` of it) over one row's KV cache
    and prefill activations. On a CPU memory is rarely what limits a batch: 64."""
    if model.device.type != "cuda":
        return 64
    t = model.config.text
    itemsize = torch.tensor([], dtype=model.dtype).element_size()
    length = round_up(prompt_tokens + max_new_tokens, LENGTH_BUCKET)
    kv = 2 * t.num_layers * t.num_kv_heads * t.head_dim * length * itemsize
    activations = 4 * prompt_tokens * max(t.hidden_size, t.intermediate_size) * itemsize
    free, _ = torch.cuda.mem_get_info(model.device)
    return int(max(1, min(SLOT_BUCKETS[-1], free * share // (kv + activations))))


@torch.inference_mode()
def generate(
    model: PaliGemma,
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
    prompts = [prompts] * len(images) if isinstance(prompts, str) else prompts
    check_options(len(images), len(prompts), max_new_tokens, do_sample, temperature, top_p, batch_size)
    if not images:
        return []
    pixels, image_of = distinct_images(model.image_processor, images)
    n_image = model.config.num_image_tokens
    sequences = [
        Sequence(i, model.tokenizer.encode_prompt(p, n_image), image)
        for i, (p, image) in enumerate(zip(prompts, image_of, strict=True))
    ]
    sampling = Sampling(max_new_tokens, do_sample, temperature, top_p, seed, stop_at_eos, return_logprobs)
    runner = model.runner
    slots, length = runner.sizes(len(sequences), max(s.prompt_len for s in sequences), max_new_tokens,
                                 batch_size or len(sequences))  # fmt: skip
    runner.start(slots, length, sampling)
    scheduler = Scheduler(slots)
    for seq in sequences:
        scheduler.add(seq)
    tok, answers = model.tokenizer, [None] * len(sequences)

    def postprocess(finished: list[Finished]) -> None:
        """Hand finished rows to their sequences (and to `on_result`), freeing their slots."""
        for row in finished:
            seq = scheduler.finish(row.slot, row.token_ids, row.logprobs, row.stopped_at_eos)
            answers[seq.index] = as_generation(seq, tok, return_logprobs)
            if on_result is not None:
                on_result(seq.index, answers[seq.index])

    run(runner, scheduler, pixels, postprocess)
    results = [answers[seq.index] for seq in scheduler.results()]
    return results if return_logprobs else [r.text for r in results]  # type: ignore[union-attr]


def run(
    runner: Runner, scheduler: Scheduler, pixels: torch.Tensor, postprocess: Callable[[list[Finished]], None]
) -> None:
    """The loop: collect finished rows, admit waiting ones (their images encoded, then their prefills), step."""
    features: dict[int, torch.Tensor] = {}
    while not scheduler.done:
        postprocess(runner.finished(scheduler.running))
        admission = scheduler.admit()
        if admission is not None:
            if admission.new_images:
                new = list(admission.new_images)
                features.update(zip(new, runner.encode(pixels[new]), strict=True))
            for group in admission.groups:
                runner.prefill(group, [features[s.image] for s in group])
                for image in scheduler.prefilled(group):
                    del features[image]  # every pair of this image is prefilled
            postprocess(runner.finished(scheduler.running))  # rows that ended at their first token
        if scheduler.running:
            runner.decode()


def as_generation(seq: Sequence, tok, with_pieces: bool) -> Generation:
    """A finished sequence as the answer generate returns."""
    return Generation(
        text=tok.decode(seq.token_ids),
        token_ids=seq.token_ids,
        tokens=tok.pieces(seq.token_ids) if with_pieces else [],
        logprobs=seq.logprobs,
        stopped_at_eos=seq.stopped_at_eos,
    )


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
