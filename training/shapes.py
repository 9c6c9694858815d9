"""The synthetic "shapes" dataset: coloured circles, squares and triangles, and one-word OCR images.

The spec is public and fixed (issue 6), so that anyone can regenerate the exact data behind the bundled demo
checkpoint: 224x224 RGB on a light background (each channel 200-255; Gaussian noise of sigma 10 on 30% of images),
1-4 objects whose boxes are 24-96 px a side and overlap by IoU <= 0.1, six jittered fill colours, and OCR images
of one 4-8 character word from A-Z and 2-9 drawn dark with Pillow's bundled font at 22-36 px.

Everything is a pure function of a `numpy.random.Generator`, so a seed names a dataset. `example_stream(seed)`
yields training examples as (image, prefix, suffix) for the five targets; `draw_scene` / `draw_word` give the
ground truth (boxes, masks, words) that evaluation and the COCO export need.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 224
CLASSES = ("circle", "square", "triangle")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (140, 60, 180),
    "orange": (240, 130, 30),
}
WORD_ALPHABET = string.ascii_uppercase + "23456789"
MAX_IOU = 0.1
# Share of each target in the training mix; OCR and segmentation have the longest answers to learn.
TASK_MIX = {"detect": 0.25, "segment": 0.2, "caption": 0.15, "count": 0.15, "ocr": 0.25}


@dataclass(frozen=True)
class Shape:
    """One drawn object. box: (x0, y0, x1, y1) in pixels, exclusive right/bottom edges; mask: bool[224, 224]."""

    kind: str
    color: str
    box: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class Example:
    """A training or evaluation example in the (image, prefix, suffix) form that big_vision and maestro use."""

    image: Image.Image
    prefix: str
    suffix: str
    task: str


def _background(rng: np.random.Generator) -> np.ndarray:
    pixels = np.broadcast_to(rng.integers(200, 256, size=3).astype(np.float32), (SIZE, SIZE, 3)).copy()
    if rng.random() < 0.3:
        pixels += rng.normal(0.0, 10.0, size=pixels.shape)
    return pixels


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _shape_mask(kind: str, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    canvas = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=255)
    elif kind == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=255)
    else:  # isosceles triangle, apex up
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=255)
    return np.asarray(canvas) > 127


def _random_box(rng: np.random.Generator, kind: str) -> tuple[int, int, int, int]:
    w = int(rng.integers(24, 97))
    h = w if kind != "triangle" else int(np.clip(round(w * rng.uniform(0.8, 1.2)), 24, 96))
    x0 = int(rng.integers(0, SIZE - w + 1))
    y0 = int(rng.integers(0, SIZE - h + 1))
    return (x0, y0, x0 + w, y0 + h)


def draw_scene(
    rng: np.random.Generator, num_objects: int | None = None, max_objects: int = 4
) -> tuple[Image.Image, list[Shape]]:
    """An image of 1-4 non-overlapping (IoU <= 0.1) shapes and their ground truth, in drawing order.

    num_objects fixes the count; otherwise it is drawn from 1..max_objects (a curriculum starts with fewer).
    """
    n = int(rng.integers(1, max_objects + 1)) if num_objects is None else num_objects
    pixels = _background(rng)
    shapes: list[Shape] = []
    while len(shapes) < n:
        kind = CLASSES[int(rng.integers(len(CLASSES)))]
        box = _random_box(rng, kind)
        if any(_iou(box, s.box) > MAX_IOU for s in shapes):
            continue
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        fill = np.clip(np.array(COLORS[color]) + rng.integers(-20, 21, size=3), 0, 255)
        mask = _shape_mask(kind, box)
        pixels[mask] = fill
        # A later shape may cover a corner of an earlier one: keep each mask to what is visible.
        shapes = [Shape(s.kind, s.color, s.box, s.mask & ~mask) for s in shapes]
        shapes.append(Shape(kind, color, box, mask))
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")
    return image, shapes


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw_word(rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A light image with one 4-8 character word (A-Z, 2-9) drawn dark at 22-36 px, placed fully inside."""
    word = "".join(WORD_ALPHABET[i] for i in rng.integers(len(WORD_ALPHABET), size=int(rng.integers(4, 9))))
    pixels = _background(rng)
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    font = _font(int(rng.integers(22, 37)))
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    x = int(rng.integers(-left, SIZE - right + 1)) if SIZE - right >= -left else -left
    y = int(rng.integers(-top, SIZE - bottom + 1))
    draw.text((x, y), word, font=font, fill=tuple(int(c) for c in rng.integers(0, 61, size=3)))
    return image, word


def objects_in_order(shapes: list[Shape], classes: tuple[str, ...]) -> list[Shape]:
    """The target order: prompt class order, then top to bottom (then left to right)."""
    return [s for c in classes for s in sorted((s for s in shapes if s.kind == c), key=lambda s: (s.box[1], s.box[0]))]


def caption_text(shapes: list[Shape]) -> str:
    """ "red circle, blue square": every object, left to right (then top to bottom)."""
    return ", ".join(f"{s.color} {s.kind}" for s in sorted(shapes, key=lambda s: (s.box[0], s.box[1])))


def count_question(kind: str) -> str:
    return f"answer en how many {kind}s are there?"


def scene_examples(image: Image.Image, shapes: list[Shape], task: str, rng: np.random.Generator, encoder=None):
    """One example of `task` for a drawn scene. `encoder` (a decoders.MaskEncoder) is needed for segment."""
    from decoders.loc_tokens import format_object

    if task == "detect":
        k = int(rng.integers(1, len(CLASSES) + 1))
        classes = tuple(CLASSES[i] for i in rng.permutation(len(CLASSES))[:k])
        objs = objects_in_order(shapes, classes)
        suffix = " ; ".join(format_object(s.box, SIZE, SIZE, s.kind) for s in objs)
        return Example(image, "detect " + " ; ".join(classes), suffix, task)
    if task == "segment":
        present = sorted({s.kind for s in shapes})
        kind = present[int(rng.integers(len(present)))] if rng.random() < 0.9 else CLASSES[int(rng.integers(3))]
        objs = objects_in_order(shapes, (kind,))
        codes = segment_codes(encoder, objs)
        suffix = " ; ".join(format_object(s.box, SIZE, SIZE, s.kind, c) for s, c in zip(objs, codes, strict=True))
        return Example(image, f"segment {kind}", suffix, task)
    if task == "caption":
        return Example(image, "caption en", caption_text(shapes), task)
    if task == "count":
        kind = CLASSES[int(rng.integers(len(CLASSES)))]
        return Example(image, count_question(kind), str(sum(s.kind == kind for s in shapes)), task)
    raise ValueError(f"unknown shapes task {task!r}")


def segment_codes(encoder, shapes: list[Shape]) -> list[list[int]]:
    """The 16 VQ-VAE codes of each shape's mask, cropped to its box as big_vision builds its targets."""
    if not shapes:
        return []
    if encoder is None:
        raise ValueError("segment targets need a VQ-VAE encoder (vae.npz)")
    import torch

    from decoders.masks import crop_to_box

    crops = torch.stack([crop_to_box(s.mask, s.box) for s in shapes])
    return encoder.encode(crops).tolist()


def example_stream(
    seed: int,
    encoder=None,
    mix: dict[str, float] | None = None,
    curriculum: tuple[int, ...] = (),
    first_tasks: tuple[str, ...] = (),
) -> Iterator[Example]:
    """An endless stream of examples drawn with `numpy.random.default_rng(seed)`; the same seed, the same stream.

    encoder: a decoders.MaskEncoder for segmentation targets; without one, `segment` is left out of the mix.

    curriculum: example counts where scenes grow: (12000, 30000) draws single-object scenes for the first 12,000
    examples, 1-2 objects until the 30,000th, then the full 1-4 of the spec (also the default, with no
    curriculum). first_tasks: the only tasks of the first stage (say caption and count, whose short answers teach
    the vision tower colours and shapes fastest). On full scenes and the full mix from the start, a model trained
    from scratch spends thousands of steps on the answers' language prior before it looks at the image; on
    captions and counts of lone shapes it looks within about 150 steps (the model card's runs).
    """
    rng = np.random.default_rng(seed)
    mix = mix or TASK_MIX
    if encoder is None:  # segmentation targets need the VQ-VAE: without one, draw the other tasks
        mix = {k: v for k, v in mix.items() if k != "segment"}
    names, weights = list(mix), np.array(list(mix.values()), dtype=float)
    weights /= weights.sum()
    first = np.array([w if n in first_tasks else 0.0 for n, w in zip(names, weights, strict=True)])
    count = 0
    while True:
        p = first / first.sum() if first_tasks and curriculum and count < curriculum[0] else weights
        task = names[int(rng.choice(len(names), p=p))]
        if task == "ocr":
            image, word = draw_word(rng)
            yield Example(image, "ocr", word, task)
        else:
            passed = sum(count >= n for n in curriculum)
            max_objects = 4 if passed == len(curriculum) else passed + 1
            image, shapes = draw_scene(rng, max_objects=max_objects)
            yield scene_examples(image, shapes, task, rng, encoder)
        count += 1
