"""A second drawing of the shapes spec, for tests only, written apart from training/shapes.py on purpose: a model
that learned the shapes reads these as well as its training drawings; a model that learned one drawing routine
does not. Nothing here calls the training generator's code.

The spec, as written down: 224 x 224 RGB, a light background (each channel 200-255), 1-4 circles, squares and
isosceles triangles (apex up) with boxes 24-96 px a side, overlapping by IoU <= 0.1, in six named colours (red,
green, blue, yellow, purple, orange); OCR images of one 4-8 character word from A-Z and 2-9, drawn dark with
Pillow's bundled font at 22-36 px, fully inside. What this drawing does its own way: shapes rasterized from
their equations with 3 x 3 supersampling (soft edges), its own reading of each colour name, backgrounds with a
faint texture, words placed by their ink's bounding box.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 224
KINDS = ("circle", "square", "triangle")
# Each name as another painter would mix it: different values from the training generator's, the same names.
PALETTE = {
    "red": (205, 35, 50),
    "green": (50, 160, 75),
    "blue": (35, 70, 200),
    "yellow": (240, 210, 50),
    "purple": (125, 55, 165),
    "orange": (235, 120, 40),
}
LETTERS = string.ascii_uppercase + "".join(str(d) for d in range(2, 10))


@dataclass(frozen=True)
class Drawn:
    kind: str
    color: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1, right and bottom exclusive
    mask: np.ndarray  # bool[224, 224], the visible part


def _coverage(kind: str, box: tuple[int, int, int, int]) -> np.ndarray:
    """Fraction of each pixel inside the shape, from 3 x 3 samples per pixel."""
    x0, y0, x1, y1 = box
    offsets = (np.arange(3) + 0.5) / 3
    ys = (np.arange(SIZE)[:, None] + offsets[None, :]).reshape(-1)
    xs = ys.copy()
    py, px = np.meshgrid(ys, xs, indexing="ij")
    w, h = x1 - x0, y1 - y0
    if kind == "circle":
        inside = ((px - (x0 + w / 2)) / (w / 2)) ** 2 + ((py - (y0 + h / 2)) / (h / 2)) ** 2 <= 1.0
    elif kind == "square":
        inside = (px >= x0) & (px < x1) & (py >= y0) & (py < y1)
    else:  # apex at the top middle, base along the bottom edge
        t = (py - y0) / h  # 0 at the apex, 1 at the base
        half = t * w / 2
        inside = (t >= 0) & (t <= 1) & (np.abs(px - (x0 + w / 2)) <= half)
    return inside.reshape(SIZE, 3, SIZE, 3).mean(axis=(1, 3))


def _overlap(a, b) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def _canvas(rng: np.random.Generator) -> np.ndarray:
    tone = rng.uniform(205, 250, size=3)
    texture = rng.uniform(-4, 4, size=(SIZE // 8, SIZE // 8, 1)).repeat(8, 0).repeat(8, 1)
    return np.clip(tone + texture, 200, 255).astype(np.float32)


def scene(rng: np.random.Generator, count: int | None = None) -> tuple[Image.Image, list[Drawn]]:
    """A scene of the spec and what is in it."""
    count = int(rng.integers(1, 5)) if count is None else count
    pixels = _canvas(rng)
    placed: list[Drawn] = []
    while len(placed) < count:
        kind = KINDS[int(rng.integers(3))]
        w = int(rng.integers(24, 97))
        h = w if kind != "triangle" else int(min(96, max(24, w + rng.integers(-10, 11))))
        x0, y0 = int(rng.integers(0, SIZE - w + 1)), int(rng.integers(0, SIZE - h + 1))
        box = (x0, y0, x0 + w, y0 + h)
        if any(_overlap(box, d.box) > 0.1 for d in placed):
            continue
        color = list(PALETTE)[int(rng.integers(len(PALETTE)))]
        cover = _coverage(kind, box)[..., None]
        paint = np.array(PALETTE[color], dtype=np.float32) + rng.uniform(-12, 12, size=3)
        pixels = pixels * (1 - cover) + paint * cover
        mask = cover[..., 0] >= 0.5
        placed = [Drawn(d.kind, d.color, d.box, d.mask & ~mask) for d in placed] + [Drawn(kind, color, box, mask)]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), placed


def word(rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A word image of the spec and its text."""
    text = "".join(LETTERS[int(i)] for i in rng.integers(len(LETTERS), size=int(rng.integers(4, 9))))
    font = ImageFont.load_default(size=int(rng.integers(22, 37)))
    ink = Image.new("L", (SIZE * 2, SIZE), 0)
    ImageDraw.Draw(ink).text((10, 40), text, font=font, fill=255)
    left, top, right, bottom = ink.getbbox()
    glyphs = np.asarray(ink, dtype=np.float32)[top:bottom, left:right] / 255.0
    gh, gw = glyphs.shape
    x = int(rng.integers(0, SIZE - gw + 1)) if gw <= SIZE else 0
    y = int(rng.integers(0, SIZE - gh + 1))
    pixels = _canvas(rng)
    color = rng.uniform(0, 55, size=3)
    region = pixels[y : y + gh, x : x + gw]
    region[:] = region * (1 - glyphs[..., None]) + color * glyphs[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), text
