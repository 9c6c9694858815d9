"""Masks between the VQ-VAE's 64x64 box frame and the full image: paste, crop, and COCO RLE.

The decoder's 64x64 output covers the object's box, not the image, so a mask is placed by resizing it to the box
size in pixels and pasting it at the box; a training target is built the other way round. Box edges are rounded to
whole pixels the same way in both directions (half up), so crop -> encode -> decode -> paste lands where it began.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from decoders.vqvae import MASK_SIZE


def box_to_pixels(box: Sequence[float]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) floats -> whole-pixel edges, rounded half up; may lie outside the image."""
    return tuple(math.floor(float(v) + 0.5) for v in box)  # type: ignore[return-value]


def paste_mask(raw: torch.Tensor | np.ndarray, box: Sequence[float], height: int, width: int) -> np.ndarray:
    """Raw decoder output float[64, 64] + box in pixels -> bool[height, width] mask of the whole image.

    The output is resized bilinearly to the full box first and only then clipped to the image, so a box that
    sticks out of the image keeps its proportions. A box with no pixel inside the image gives an empty mask.
    """
    canvas = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = box_to_pixels(box)
    if x1 <= x0 or y1 <= y0:
        return canvas
    # Visible part of the box: image rows/cols [cy0, cy1) x [cx0, cx1).
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return canvas
    raw_t = torch.as_tensor(raw, dtype=torch.float32).detach().cpu()
    if tuple(raw_t.shape) != (MASK_SIZE, MASK_SIZE):
        raise ValueError(f"expected a raw mask of shape ({MASK_SIZE}, {MASK_SIZE}) but got {tuple(raw_t.shape)}")
    resized = F.interpolate(raw_t[None, None], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[0, 0]
    inside = resized[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] > 0
    canvas[cy0:cy1, cx0:cx1] = inside.numpy()
    return canvas


def paste_masks(
    raw: torch.Tensor | np.ndarray, boxes: Sequence[Sequence[float]], height: int, width: int
) -> np.ndarray:
    """float[N, 64, 64] + N boxes -> bool[N, height, width]."""
    if len(raw) != len(boxes):
        raise ValueError(f"expected one box per mask but got {len(raw)} masks and {len(boxes)} boxes")
    out = np.zeros((len(boxes), height, width), dtype=bool)
    for i, (m, b) in enumerate(zip(raw, boxes, strict=True)):
        out[i] = paste_mask(m, b, height, width)
    return out


def crop_to_box(mask: np.ndarray | torch.Tensor, box: Sequence[float]) -> torch.Tensor:
    """Full-image mask [H, W] (bool or 0..1) + box in pixels -> float[64, 64] in [0, 1], the encoder's input.

    Bilinear with antialiasing, as big_vision builds its segmentation targets. Parts of the box outside the image
    count as background.
    """
    m = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask).to(torch.float32)
    if m.ndim != 2:
        raise ValueError(f"expected a mask of shape (H, W) but got {tuple(m.shape)}")
    height, width = m.shape
    x0, y0, x1, y1 = box_to_pixels(box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"expected a box with positive size in pixels but got {tuple(box)}")
    crop = torch.zeros(y1 - y0, x1 - x0)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 > cx0 and cy1 > cy0:
        crop[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = m[cy0:cy1, cx0:cx1]
    size = (MASK_SIZE, MASK_SIZE)
    return F.interpolate(crop[None, None], size=size, mode="bilinear", align_corners=False, antialias=True)[0, 0]


def mask_to_rle(mask: np.ndarray) -> dict:
    """bool[H, W] -> COCO RLE {"size": [h, w], "counts": str}, JSON- and Parquet-ready."""
    from pycocotools import mask as mask_utils

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a mask of shape (H, W) but got {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """COCO RLE (counts as str or bytes) -> bool[H, W]."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    encoded = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(encoded).astype(bool)
