"""What every reader gives back: images with their objects (`Item`, `Obj`), and the tally of what was left out.

Readers of COCO, YOLO, VOC, Label Studio, label rows and referring tables all turn their format into `Item`s:
one image (a local path or a URI), its size, and its objects with a box in pixels and, when the source has one,
a mask. Everything after that (classes, prompts, order, `<seg>` codes, splits) is the same code for every source
(records/build.py). Bad input never stops a reader: the object or the image is left out and counted under a kind
(`Problems`), and the job prints one line per kind.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

# How far (pixels) a box may stick out of its image before it is refused as "box outside the image": exporters
# round, and a box a pixel past the edge is the same object; further out, the annotation is wrong.
EDGE_SLACK = 2.0


@dataclass(frozen=True)
class Obj:
    """One object: its label, box (x0, y0, x1, y1) in pixels of the image, and its mask bool[H, W] or None."""

    label: str
    box: tuple[float, float, float, float]
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Item:
    """One image and its objects. image: a path (absolute, or relative to the working folder) or a URI.
    expression: a referring expression (the prompt's text instead of class names); task: detect or segment when
    the source decides it (referring tables with masks)."""

    image: str
    width: int
    height: int
    objects: tuple[Obj, ...]
    image_id: int | None = None
    expression: str | None = None


@dataclass
class Problems:
    """Counts of what a reader or the builder left out, by kind; `lines()` gives one line per kind."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, where: str = "") -> None:
        self.counts[kind] += 1
        if where and kind not in self.examples:
            self.examples[kind] = where

    def lines(self) -> list[str]:
        return [
            f"{kind}: {n}" + (f" (first: {self.examples[kind]})" if kind in self.examples else "")
            for kind, n in sorted(self.counts.items())
        ]

    def __bool__(self) -> bool:
        return bool(self.counts)


def clip_box(
    box: tuple[float, float, float, float], width: int, height: int, problems: Problems, where: str
) -> tuple[float, float, float, float] | None:
    """The box clipped to the image, or None (counted) when it is empty or lies outside the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite([x0, y0, x1, y1])):
        problems.add("box not a number", where)
        return None
    if x0 < -EDGE_SLACK or y0 < -EDGE_SLACK or x1 > width + EDGE_SLACK or y1 > height + EDGE_SLACK:
        problems.add("box outside the image", where)
        return None
    x0, x1 = max(0.0, x0), min(float(width), x1)
    y0, y1 = max(0.0, y0), min(float(height), y1)
    if x1 - x0 < 1.0 or y1 - y0 < 1.0:
        problems.add("box with no area", where)
        return None
    return (x0, y0, x1, y1)


def polygon_mask(polygons: list[list[float]], width: int, height: int) -> np.ndarray:
    """COCO-style polygons (flat [x0, y0, x1, y1, ...] lists in pixels) -> bool[H, W], by pycocotools' rasterizer
    (the one COCO's own masks are defined by)."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """The tight box (x0, y0, x1, y1), exclusive right/bottom edges, of a bool mask; None when it is empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from the image's header (Pillow reads no pixels for it); None when it cannot be read."""
    import io

    from PIL import Image

    from storage import is_uri, read_bytes

    try:
        if is_uri(path):
            with Image.open(io.BytesIO(read_bytes(path))) as im:
                return im.size
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError):
        return None
