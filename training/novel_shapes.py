"""A shape class the bundled model has never seen: five-pointed stars among the circles, squares and triangles.

For measuring transfer (benchmarks/transfer.py): scenes drawn as training/shapes.py draws them (same canvas,
background, colours, box sizes, overlap rule), except that each object is a star with probability `star_share`
and one of the three known classes otherwise. `write_coco_set` writes a set as a user's dataset would arrive:
images/ plus a COCO instances file with boxes and RLE masks, categories circle, square, triangle and star.
Everything is a pure function of the seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .shapes import CLASSES, COLORS, MAX_IOU, SIZE, Shape, _background, _iou, _random_box, _shape_mask

NOVEL = "star"
ALL_CLASSES = (*CLASSES, NOVEL)


def star_mask(box: tuple[int, int, int, int]) -> np.ndarray:
    """A five-pointed star, point up, filling its box (inner radius 0.45 of the outer)."""
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, (x1 - x0 - 1) / 2, (y1 - y0 - 1) / 2
    points = []
    for k in range(10):
        r = 1.0 if k % 2 == 0 else 0.45
        a = -math.pi / 2 + k * math.pi / 5
        points.append((cx + r * rx * math.cos(a), cy + r * ry * math.sin(a)))
    # The star's lowest points sit at sin(54°) of the outer radius: stretch so that it touches the box's bottom.
    top, bottom = min(p[1] for p in points), max(p[1] for p in points)
    points = [(x, y0 + (y - top) * (y1 - 1 - y0) / (bottom - top)) for x, y in points]
    canvas = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=255)
    return np.asarray(canvas) > 127


def draw_novel_scene(
    rng: np.random.Generator, max_objects: int = 4, star_share: float = 0.5
) -> tuple[Image.Image, list[Shape]]:
    """1..max_objects (the shapes spec's 4) non-overlapping objects (IoU <= 0.1), each a star with probability
    star_share."""
    n = int(rng.integers(1, max_objects + 1))
    pixels = _background(rng)
    shapes: list[Shape] = []
    while len(shapes) < n:
        kind = NOVEL if rng.random() < star_share else CLASSES[int(rng.integers(len(CLASSES)))]
        box = _random_box(rng, "square" if kind == NOVEL else kind)
        if any(_iou(box, s.box) > MAX_IOU for s in shapes):
            continue
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        fill = np.clip(np.array(COLORS[color]) + rng.integers(-20, 21, size=3), 0, 255)
        mask = star_mask(box) if kind == NOVEL else _shape_mask(kind, box)
        pixels[mask] = fill
        shapes = [Shape(s.kind, s.color, s.box, s.mask & ~mask) for s in shapes]
        shapes.append(Shape(kind, color, box, mask))
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB"), shapes


def write_coco_set(folder: str | Path, num_images: int, seed: int, star_share: float = 0.5) -> Path:
    """images/NNNNN.png + annotations.json (COCO instances, RLE masks); returns the annotation file."""
    from decoders.masks import mask_to_rle

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(num_images):
        image, shapes = draw_novel_scene(rng, star_share=star_share)
        name = f"images/{i:05d}.png"
        image.save(folder / name)
        images.append({"id": i + 1, "file_name": name, "width": SIZE, "height": SIZE})
        for s in shapes:
            x0, y0, x1, y1 = s.box
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": ALL_CLASSES.index(s.kind) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": int(s.mask.sum()), "segmentation": mask_to_rle(s.mask),
                                "iscrowd": 0})  # fmt: skip
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(ALL_CLASSES)]
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path
