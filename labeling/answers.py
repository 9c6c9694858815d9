"""Answers to rows: generate, then read each answer. The one place where an answer becomes a row.

The replicas of the label job, the web page, the single-image command and the evaluation during training all
call `label_batch`, so a row means the same thing wherever it was made. It never raises for one bad input:
a generation that fails is retried row by row and a row that still fails, or whose answer cannot be parsed,
becomes an error row (the text is kept when there is one).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from labeling.backends import Backend
from labeling.errors import GENERATION, PARSE
from model import PaliGemma
from model.generation import Generation
from rows import Row
from tasks import ObjectsResult, Task, TextResult


@dataclass
class Labeled:
    """One answer: the row that is written, the parsed result it came from (None for an error row) and the
    generation (its tokens and log-probabilities; None when generation failed)."""

    row: Row
    result: TextResult | ObjectsResult | None
    generation: Generation | None


def label_batch(
    model: Backend,
    tasks: Sequence[Task],
    images: Sequence[Image.Image | np.ndarray],
    *,
    image_ids: Sequence[int] | None = None,
    paths: Sequence[str] | None = None,
    sizes: Sequence[tuple[int, int]] | None = None,
    mask_decoder=None,
    max_new_tokens: int = 64,
    model_name: str = "",
    **generate_options,
) -> list[Labeled]:
    """Answer task i about image i, for every i, in one batched generate call.

    model: a PaliGemma or any backend with the same `generate` (labeling.backends.Backend).
    images: PIL images, or uint8 H x W x 3 arrays (the label job sends its decoded pixels as they are).
    sizes: the original (width, height) of each image when `images` were resized before (boxes and masks are
    placed in the original's pixels); the images' own sizes by default.
    generate_options: passed to generate (batch_size, sampling settings).
    """
    n = len(images)
    if len(tasks) != n:
        raise ValueError(f"expected one task per image but got {len(tasks)} tasks for {n} images")
    image_ids = list(image_ids) if image_ids is not None else list(range(n))
    paths = list(paths) if paths is not None else [""] * n
    sizes = list(sizes) if sizes is not None else [_size(im) for im in images]
    prompts = [t.prompt() for t in tasks]
    streamed: dict[int, tuple[Generation, Future]] = {}
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as parser:

        def read(i: int, gen: Generation) -> Future:
            return parser.submit(_read, tasks[i], gen, sizes[i], mask_decoder)

        options = dict(generate_options)
        if isinstance(model, PaliGemma) or getattr(model, "streams_results", False):
            # Parse each answer while the other rows are still being generated.
            options["on_result"] = lambda i, gen: streamed.__setitem__(i, (gen, read(i, gen)))
        generations = _generate(model, list(images), prompts, max_new_tokens, options)
        seconds = (time.perf_counter() - start) / max(n, 1)
        out = []
        for i, gen in enumerate(generations):
            width, height = sizes[i]
            row = Row(image_id=int(image_ids[i]), path=str(paths[i]), width=int(width), height=int(height),
                      task=tasks[i].name, prompt=prompts[i], text="", objects=[], error=None, error_kind=None,
                      model=model_name, seconds=0.0)  # fmt: skip
            if isinstance(gen, str):
                out.append(Labeled(row | {"error": gen, "error_kind": GENERATION}, None, None))  # type: ignore[arg-type]
                continue
            early = streamed.get(i)
            # Use the streamed parse only when it is of this very generation (a retried row is parsed anew).
            future = early[1] if early is not None and early[0] is gen else read(i, gen)
            out.append(_labeled(row, gen, seconds, future.result()))
    return out


def _labeled(row: Row, gen: Generation, seconds: float, result) -> Labeled:
    """The row of a generation and its parse (or the parser's error message: the text is kept)."""
    row["text"], row["seconds"] = gen.text, seconds
    if isinstance(result, str):
        row["error"], row["error_kind"] = result, PARSE
        return Labeled(row, None, gen)
    row["objects"] = result.object_rows()
    return Labeled(row, result, gen)


def _size(image) -> tuple[int, int]:
    return image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])


def _read(task: Task, gen: Generation, size: tuple[int, int], mask_decoder):
    """The parsed answer, or the message of a parser bug (the row keeps its text and says what failed)."""
    try:
        return task.parse(gen.text, width=int(size[0]), height=int(size[1]), tokens=gen.tokens,
                          logprobs=gen.logprobs, mask_decoder=mask_decoder)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - a parser bug must not lose the row
        return f"cannot parse the answer: {type(e).__name__}: {e}"


def _generate(model, images: list, prompts: list[str], max_new_tokens: int, options: dict) -> list[Generation | str]:
    """Generations, or an error message for each row whose generation fails even when run alone."""
    try:
        return model.generate(images, prompts, max_new_tokens=max_new_tokens, return_logprobs=True, **options)
    except Exception as batch_error:  # noqa: BLE001 - isolate the row that fails
        if len(images) == 1:
            return [f"generation failed: {type(batch_error).__name__}: {batch_error}"]
    options = {k: v for k, v in options.items() if k != "on_result"}  # the rows are redone: parse them afterwards
    out: list[Generation | str] = []
    for image, prompt in zip(images, prompts, strict=True):
        out.extend(_generate(model, [image], [prompt], max_new_tokens, options))
    return out
