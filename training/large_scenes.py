"""Large scenes of small shapes: held-out images on which squashing loses the objects and tiling should not.

The shapes of training/shapes.py (the spec the bundled checkpoint was trained on: coloured circles, squares and
apex-up triangles on a light background, each channel 200-255, Gaussian noise of sigma 10 on 30% of images), but
on a canvas of 896 x 896 (or any size) with 10-30 shapes of 20-60 px a side whose boxes never touch (a gap of at
least GAP pixels). Squashed to 224 px such a shape is 5-15 px; cut into 224-px tiles it keeps the size the model
was trained on (24-96 px).

A benchmark set is laid out as training/shapes_dataset.py's, so `evals.shapes.shapes_scores` reads it:

    images/00000.png ...   the scenes
    annotations.json       COCO ground truth: boxes and RLE masks, categories circle, square, triangle (ids 1-3)
    manifest.parquet       image_id, path, prompt, answer: `detect circle ; square ; triangle` for every scene and
                           `segment <class>` for every class present (answers empty: scored against the COCO file)

Everything is a pure function of a seed, so a seed names a set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from labeling.tiles import MaskCrop

from .shapes import CLASSES, COLORS, _shape_mask
from .shapes_dataset import CATEGORIES, DETECT_ALL, shape_annotation

SCENE_SIZE = 896
SIDES = (20, 60)  # a shape's box side in pixels, both ends included
COUNTS = (10, 30)  # shapes per scene, both ends included
GAP = 2  # the least distance in pixels between two boxes, so that neighbours stay distinct objects


@dataclass(frozen=True, eq=False)
class LargeShape:
    """One drawn object. box: (x0, y0, x1, y1) in pixels, exclusive right/bottom edges; mask: its visible pixels
    as a crop at the box (bool[y1 - y0, x1 - x0]), never a canvas of the whole scene."""

    kind: str
    color: str
    box: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)

    def crop(self) -> MaskCrop:
        return MaskCrop(self.box[0], self.box[1], self.mask)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """training/shapes.py's background at another size (its own is fixed at 224 px)."""
    pixels = np.broadcast_to(rng.integers(200, 256, size=3).astype(np.float32), (size, size, 3)).copy()
    if rng.random() < 0.3:
        pixels += rng.normal(0.0, 10.0, size=pixels.shape).astype(np.float32)
    return pixels


def _random_box(rng: np.random.Generator, kind: str, size: int, sides: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box as shapes.py draws them (squares and circles square, triangles 0.8-1.2 as high as wide), smaller."""
    lo, hi = sides
    w = int(rng.integers(lo, hi + 1))
    h = w if kind != "triangle" else int(np.clip(round(w * rng.uniform(0.8, 1.2)), lo, hi))
    x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    return (x0, y0, x0 + w, y0 + h)


def _near(a: tuple[int, ...], b: tuple[int, ...], gap: int) -> bool:
    """Whether two boxes overlap or lie closer than `gap` pixels."""
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def draw_large_scene(
    rng: np.random.Generator, size: int = SCENE_SIZE, counts: tuple[int, int] = COUNTS, sides: tuple[int, int] = SIDES
) -> tuple[Image.Image, list[LargeShape]]:
    """A size x size scene of counts[0]..counts[1] shapes whose boxes never come within GAP pixels of each other."""
    if not (1 <= sides[0] <= sides[1] <= size and 0 <= counts[0] <= counts[1]):
        raise ValueError(f"expected 1 <= sides <= size and 0 <= counts[0] <= counts[1] but got {sides}, {counts}")
    n = int(rng.integers(counts[0], counts[1] + 1))
    pixels = _background(rng, size)
    shapes: list[LargeShape] = []
    for _ in range(1000 * max(n, 1)):
        if len(shapes) == n:
            break
        kind = CLASSES[int(rng.integers(len(CLASSES)))]
        box = _random_box(rng, kind, size, sides)
        if any(_near(box, s.box, GAP) for s in shapes):
            continue
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        fill = np.clip(np.array(COLORS[color]) + rng.integers(-20, 21, size=3), 0, 255)
        x0, y0, x1, y1 = box
        # shapes.py's own rasterization, drawn at the origin of its 224-px canvas (a box is at most 60 px).
        mask = _shape_mask(kind, (0, 0, x1 - x0, y1 - y0))[: y1 - y0, : x1 - x0]
        pixels[y0:y1, x0:x1][mask] = fill
        shapes.append(LargeShape(kind, color, box, mask))
    if len(shapes) < n:
        raise ValueError(f"cannot place {n} shapes of {sides} px apart on a {size} px scene")
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")
    return image, shapes


def write_large_benchmark_set(
    folder: str | Path, scenes: int, seed: int, size: int = SCENE_SIZE, counts: tuple[int, int] = COUNTS
) -> dict[str, int]:
    """Draw `scenes` scenes with default_rng(seed) and write the set (module docstring); returns how many images,
    prompts and objects it holds."""
    import pandas as pd

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations, rows = [], [], []
    for i in range(scenes):
        image_id, name = i + 1, f"images/{i:05d}.png"
        image, shapes = draw_large_scene(rng, size, counts)
        image.save(folder / name)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for s in shapes:
            annotations.append(shape_annotation(len(annotations) + 1, image_id, s.kind, s.box, int(s.mask.sum()),
                                                s.crop().to_rle(size, size), s.color))  # fmt: skip
        prompts = [DETECT_ALL] + [f"segment {kind}" for kind in sorted({s.kind for s in shapes})]
        rows += [{"image_id": image_id, "path": name, "prompt": p, "answer": ""} for p in prompts]
    coco = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (folder / "annotations.json").write_text(json.dumps(coco))
    pd.DataFrame(rows, columns=["image_id", "path", "prompt", "answer"]).to_parquet(
        folder / "manifest.parquet", index=False
    )
    return {"images": len(images), "prompts": len(rows), "objects": len(annotations)}
