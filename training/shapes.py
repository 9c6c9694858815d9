"""The synthetic "shapes" dataset: coloured circles, squares and triangles, and one-word OCR images.

The spec is public and fixed (issue 6), so that anyone can regenerate the exact data behind the bundled demo
checkpoint: 224x224 RGB on a light background (each channel 200-255; Gaussian noise of sigma 10 on 30% of images),
1-4 objects whose boxes are 24-96 px a side and overlap by IoU <= 0.1, six jittered fill colours, and OCR images
of one 4-8 character word from A-Z and 2-9 drawn dark with Pillow's bundled font at 22-36 px.

Everything is a pure function of a `numpy.random.Generator`, so a seed names a dataset. `shapes_example(seed,
index)` draws training example `index` of a stream from its own generator, so any example can be drawn alone: a
resumed run or a background data process continues the stream exactly. `draw_scene` / `draw_word` give the
ground truth (boxes, masks, words) that evaluation and the COCO export need.

**What the targets teach.** A detection prompt names the classes present in the image most of the time (each
present class with probability 0.75, at least one, plus absent classes with probability 0.3, in the benchmark's
order or shuffled), so its answer lists objects; a share of prompts (`NEGATIVE_SHARE`) names only absent classes,
whose answer is empty, so the model still learns to say "none". (Drawing 1-3 classes at random, as the first
version did, left two answers in three empty for one-object scenes, and a model trained on that answered every
`detect <class>` with `<eos>`.) Segmentation asks for a present class with the same odds.

**Augmentation** (`augment=True`, a curriculum stage's `augment`) varies what the spec leaves free, so that a model
learns the shapes rather than one drawing routine: the exact colour within each named colour (hue, saturation and
brightness moved, the name unchanged), the background's tone and noise (any light tone, an optional gradient,
noise on more images), anti-aliased or hard edges, and positions up to the border; words get any dark ink on the
same backgrounds, with soft or hard glyph edges. Held-out sets are drawn without it (the spec as written).
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
TASKS = tuple(TASK_MIX)
# Share of detect/segment prompts that name only classes absent from the image (the answer is empty).
NEGATIVE_SHARE = 0.1
WORD_LENGTHS = (4, 8)  # the spec's OCR words


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


def _background(rng: np.random.Generator, augment: bool = False) -> np.ndarray:
    pixels = np.broadcast_to(rng.integers(200, 256, size=3).astype(np.float32), (SIZE, SIZE, 3)).copy()
    if augment:
        if rng.random() < 0.5:  # a gentle gradient in a random direction, staying light
            angle = rng.uniform(0, 2 * np.pi)
            ramp = np.cos(angle) * np.arange(SIZE)[None, :] + np.sin(angle) * np.arange(SIZE)[:, None]
            pixels += (ramp / SIZE * rng.uniform(-25, 25))[..., None]
        if rng.random() < 0.5:
            pixels += rng.normal(0.0, rng.uniform(2.0, 15.0), size=pixels.shape)
        return np.clip(pixels, 185, 255)
    if rng.random() < 0.3:
        pixels += rng.normal(0.0, 10.0, size=pixels.shape)
    return pixels


def _fill(rng: np.random.Generator, color: str, augment: bool) -> np.ndarray:
    """A fill of a named colour: the spec's jitter (each channel within 20), or with `augment` the colour's hue,
    saturation and brightness each moved within a range that keeps its name."""
    base = np.array(COLORS[color], dtype=np.float32)
    if not augment:
        return np.clip(base + rng.integers(-20, 21, size=3), 0, 255)
    import colorsys

    h, s, v = colorsys.rgb_to_hsv(*(base / 255.0))
    # About 5 degrees of hue, and saturation and brightness within a sixth: yellow and orange, the closest pair
    # (23 degrees apart), stay apart, and a yellow never darkens to olive.
    h = (h + rng.uniform(-0.015, 0.015)) % 1.0
    s = float(np.clip(s * rng.uniform(0.8, 1.1), 0.35, 1.0))
    v = float(np.clip(v * rng.uniform(0.85, 1.08), 0.35, 1.0))
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255.0


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _shape_coverage(kind: str, box: tuple[int, int, int, int], scale: int = 1) -> np.ndarray:
    """The shape drawn at `scale` times the resolution and averaged back: float[224, 224] coverage in [0, 1]
    (hard 0/1 at scale 1, anti-aliased edges above)."""
    x0, y0, x1, y1 = (v * scale for v in box)
    canvas = Image.new("L", (SIZE * scale, SIZE * scale), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=255)
    elif kind == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=255)
    else:  # isosceles triangle, apex up
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=255)
    if scale > 1:
        canvas = canvas.resize((SIZE, SIZE), Image.Resampling.BOX)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _shape_mask(kind: str, box: tuple[int, int, int, int]) -> np.ndarray:
    return _shape_coverage(kind, box) > 0.5


def _random_box(rng: np.random.Generator, kind: str, augment: bool = False) -> tuple[int, int, int, int]:
    w = int(rng.integers(24, 97))
    h = w if kind != "triangle" else int(np.clip(round(w * rng.uniform(0.8, 1.2)), 24, 96))
    x0 = int(rng.integers(0, SIZE - w + 1))
    y0 = int(rng.integers(0, SIZE - h + 1))
    if augment and rng.random() < 0.3:  # against a border: uniform positions reach it rarely
        if rng.random() < 0.5:
            x0 = 0 if rng.random() < 0.5 else SIZE - w
        else:
            y0 = 0 if rng.random() < 0.5 else SIZE - h
    return (x0, y0, x0 + w, y0 + h)


def draw_scene(
    rng: np.random.Generator, num_objects: int | None = None, max_objects: int = 4, augment: bool = False
) -> tuple[Image.Image, list[Shape]]:
    """An image of 1-4 non-overlapping (IoU <= 0.1) shapes and their ground truth, in drawing order.

    num_objects fixes the count; otherwise it is drawn from 1..max_objects (a curriculum starts with fewer).
    augment: vary what the spec leaves free (the module docstring); without it the random stream is the spec's.
    """
    n = int(rng.integers(1, max_objects + 1)) if num_objects is None else num_objects
    pixels = _background(rng, augment)
    shapes: list[Shape] = []
    while len(shapes) < n:
        kind = CLASSES[int(rng.integers(len(CLASSES)))]
        box = _random_box(rng, kind, augment)
        if any(_iou(box, s.box) > MAX_IOU for s in shapes):
            continue
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        fill = _fill(rng, color, augment)
        mask = _shape_mask(kind, box)
        if augment and rng.random() < 0.5:  # anti-aliased edges: blend by coverage
            cover = _shape_coverage(kind, box, scale=4)[..., None]
            pixels[:] = pixels * (1 - cover) + fill * cover
        else:
            pixels[mask] = fill
        # A later shape may cover a corner of an earlier one: keep each mask to what is visible.
        shapes = [Shape(s.kind, s.color, s.box, s.mask & ~mask) for s in shapes]
        shapes.append(Shape(kind, color, box, mask))
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")
    return image, shapes


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw_word(
    rng: np.random.Generator, lengths: tuple[int, int] = WORD_LENGTHS, augment: bool = False
) -> tuple[Image.Image, str]:
    """A light image with one word of `lengths` characters (the spec: 4-8, from A-Z and 2-9) drawn dark at 22-36
    px, placed fully inside."""
    image, word, _ = draw_word_with_centers(rng, lengths, augment)
    return image, word


def draw_word_with_centers(
    rng: np.random.Generator, lengths: tuple[int, int] = WORD_LENGTHS, augment: bool = False
) -> tuple[Image.Image, str, list[tuple[float, float]]]:
    """draw_word, plus the (x, y) pixel center of each character (the vision tower's pretraining targets);
    draws from `rng` exactly as draw_word does. augment: any dark ink, the varied background of scenes, and
    hard (not anti-aliased) glyph edges half of the time; the word itself, its size and place as the spec."""
    size = int(rng.integers(lengths[0], lengths[1] + 1))
    word = "".join(WORD_ALPHABET[i] for i in rng.integers(len(WORD_ALPHABET), size=size))
    pixels = _background(rng, augment)
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    if augment and rng.random() < 0.5:
        draw.fontmode = "1"  # hard glyph edges
    font = _font(int(rng.integers(22, 37)))
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    x = int(rng.integers(-left, SIZE - right + 1)) if SIZE - right >= -left else -left
    y = int(rng.integers(-top, SIZE - bottom + 1))
    ink = rng.integers(0, 61, size=3) if not augment else rng.integers(0, 91, size=3)
    draw.text((x, y), word, font=font, fill=tuple(int(c) for c in ink))
    edges = [x + draw.textlength(word[:i], font=font) for i in range(len(word) + 1)]
    cy = y + (top + bottom) / 2
    return image, word, [((a + b) / 2, cy) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def objects_in_order(shapes: list[Shape], classes: tuple[str, ...]) -> list[Shape]:
    """The target order: prompt class order, then top to bottom (then left to right)."""
    return [s for c in classes for s in sorted((s for s in shapes if s.kind == c), key=lambda s: (s.box[1], s.box[0]))]


def caption_text(shapes: list[Shape]) -> str:
    """ "red circle, blue square": every object, left to right (then top to bottom)."""
    return ", ".join(f"{s.color} {s.kind}" for s in sorted(shapes, key=lambda s: (s.box[0], s.box[1])))


def count_question(kind: str) -> str:
    return f"answer en how many {kind}s are there?"


def prompt_classes(shapes: list[Shape], rng: np.random.Generator, negative_share: float = NEGATIVE_SHARE):
    """The classes a detect prompt names (see the module docstring): mostly the present ones, sometimes only absent
    ones. In the benchmark's order (circle, square, triangle) half of the time, shuffled otherwise."""
    present = [c for c in CLASSES if any(s.kind == c for s in shapes)]
    absent = [c for c in CLASSES if c not in present]
    if absent and rng.random() < negative_share:
        chosen = [c for c in absent if rng.random() < 0.5] or [absent[int(rng.integers(len(absent)))]]
    else:
        chosen = [c for c in present if rng.random() < 0.75] or [present[int(rng.integers(len(present)))]]
        chosen += [c for c in absent if rng.random() < 0.3]
        chosen = [c for c in CLASSES if c in chosen]
    if rng.random() < 0.5:
        chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    return tuple(chosen)


def scene_examples(image: Image.Image, shapes: list[Shape], task: str, rng: np.random.Generator, encoder=None):
    """One example of `task` for a drawn scene. `encoder` (a decoders.MaskEncoder) is needed for segment."""
    from decoders.loc_tokens import format_object

    if task == "detect":
        classes = prompt_classes(shapes, rng)
        objs = objects_in_order(shapes, classes)
        suffix = " ; ".join(format_object(s.box, SIZE, SIZE, s.kind) for s in objs)
        return Example(image, "detect " + " ; ".join(classes), suffix, task)
    if task == "segment":
        present = sorted({s.kind for s in shapes})
        absent = [c for c in CLASSES if c not in present]
        if absent and rng.random() < NEGATIVE_SHARE:
            kind = absent[int(rng.integers(len(absent)))]
        else:
            kind = present[int(rng.integers(len(present)))]
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


@dataclass(frozen=True)
class Stage:
    """One stage of a curriculum: `examples` examples (the last stage runs on for ever) of scenes with at most
    `max_objects` objects, OCR words of `word_lengths` characters, and the task `mix` (None: TASK_MIX)."""

    examples: int
    max_objects: int = 4
    word_lengths: tuple[int, int] = WORD_LENGTHS
    mix: dict[str, float] | None = None
    augment: bool = False  # vary what the spec leaves free (see the module docstring)

    def __post_init__(self) -> None:
        if self.examples < 1 or not 1 <= self.max_objects <= 4:
            raise ValueError(f"a stage needs examples >= 1 and 1 <= max_objects <= 4, got {self}")
        lo, hi = self.word_lengths
        if not 1 <= lo <= hi <= 12:
            raise ValueError(f"word_lengths must satisfy 1 <= low <= high <= 12, got {self.word_lengths}")
        if self.mix is not None and (not self.mix or any(t not in TASK_MIX or w < 0 for t, w in self.mix.items())):
            raise ValueError(f"a stage's mix takes weights >= 0 for {', '.join(TASK_MIX)}, got {self.mix}")

    @classmethod
    def from_dict(cls, d: dict) -> Stage:
        d = dict(d)
        if "word_lengths" in d:
            d["word_lengths"] = tuple(d["word_lengths"])
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown stage keys {sorted(unknown)}; a stage takes {list(cls.__dataclass_fields__)}")
        return cls(**d)


def stage_at(stages: tuple[Stage, ...], index: int) -> Stage:
    """The stage that example `index` of a stream belongs to (the spec's data when there are no stages)."""
    for stage in stages:
        if index < stage.examples:
            return stage
        index -= stage.examples
    return stages[-1] if stages else Stage(1)


def shapes_example(seed: int, index: int, encoder=None, stages: tuple[Stage, ...] = ()) -> Example:
    """Example `index` of the stream named by `seed`, drawn with its own generator `default_rng([seed, index])`.

    encoder: a decoders.MaskEncoder for segmentation targets; without one, `segment` is left out of the mix.
    stages: a curriculum (see Stage); none means the spec's scenes and words with TASK_MIX throughout. On full
    scenes and the full mix from the start, a model trained from scratch spends thousands of steps on the
    answers' language prior before it looks at the image (the bundled model card's runs).
    """
    rng = np.random.default_rng([seed, index])
    stage = stage_at(stages, index)
    mix = stage.mix or TASK_MIX
    names = [t for t, w in mix.items() if w > 0 and (t != "segment" or encoder is not None)]
    if not names:
        raise ValueError(f"the mix {mix} leaves no task to draw (segment needs a VQ-VAE encoder)")
    weights = np.array([mix[t] for t in names], dtype=float)
    task = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    if task == "ocr":
        image, word = draw_word(rng, stage.word_lengths, stage.augment)
        return Example(image, "ocr", word, task)
    image, shapes = draw_scene(rng, max_objects=stage.max_objects, augment=stage.augment)
    return scene_examples(image, shapes, task, rng, encoder)


def example_stream(seed: int, encoder=None, stages: tuple[Stage, ...] = (), start: int = 0) -> Iterator[Example]:
    """Examples start, start + 1, ... of the stream named by `seed` (see shapes_example)."""
    index = start
    while True:
        yield shapes_example(seed, index, encoder, stages)
        index += 1
