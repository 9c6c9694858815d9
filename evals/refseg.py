"""Referring-expression segmentation: mIoU and box accuracy, as big_vision's PaliGemma evaluator defines them.

One example = one referring expression with one ground-truth object. The model's answer is its first object.
- mIoU: the mean over examples of that example's mask IoU, computed against the ground-truth mask at the full
  image resolution (not the 64×64 decoder grid). An invalid prediction (no object, or an object without a mask)
  scores 0 and is counted, so failures pull the mean down instead of vanishing from it.
- box accuracy at IoU 0.5: the fraction of examples whose first predicted box overlaps the ground-truth box with
  IoU >= 0.5. Unlike big_vision, which needs the 16 mask tokens before it looks at the box, a box without a mask
  counts here, so that `detect`-style output can be scored on the same data.

mIoU is the mean of per-example IoUs, not the "cumulative IoU" (total intersection / total union) some RefCOCO
papers report; the two differ because large objects dominate the cumulative form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def to_mask(mask: Any, height: int | None = None, width: int | None = None) -> np.ndarray:
    """bool[H, W] from a bool/0-1 array, a COCO RLE dict (counts as str, bytes or an uncompressed list) or
    COCO polygons (a list of [x0, y0, x1, y1, ...] lists, which need height and width)."""
    from pycocotools import mask as mask_utils

    if isinstance(mask, dict):
        h, w = (int(v) for v in mask["size"])
        counts = mask["counts"]
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects(mask, h, w)
        else:
            rle = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return mask_utils.decode(rle).astype(bool)
    if isinstance(mask, list) and (not mask or isinstance(mask[0], (list, tuple))):
        if height is None or width is None:
            raise ValueError("polygon masks need the image height and width")
        if not mask:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in mask], height, width))
        return mask_utils.decode(rle).astype(bool)
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"expected a mask of shape (H, W) but got {array.shape}")
    return array.astype(bool)


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """|pred ∩ gt| / |pred ∪ gt| for two bool[H, W] masks of the same shape; 0 when both are empty (undefined)."""
    if pred.shape != gt.shape:
        raise ValueError(f"expected masks of the same shape but got {pred.shape} and {gt.shape}")
    inter = int(np.logical_and(pred, gt).sum())
    union = int(pred.sum()) + int(gt.sum()) - inter
    return inter / union if union else 0.0


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [x0, y0, x1, y1] boxes (continuous coordinates, no +1); 0 when the union is empty."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class RefSegExample:
    """One expression. pred_mask/pred_box None = the model gave no (valid) mask/box. Boxes are [x0, y0, x1, y1]."""

    gt_mask: np.ndarray = field(repr=False)
    gt_box: Sequence[float]
    pred_mask: np.ndarray | None = field(default=None, repr=False)
    pred_box: Sequence[float] | None = None


@dataclass(frozen=True)
class RefSegResult:
    miou: float
    box_acc: float  # at IoU >= box_threshold
    box_threshold: float
    invalid: int  # examples without a predicted mask (each scored IoU 0)
    total: int
    ious: tuple[float, ...] = field(repr=False, default=())

    def as_dict(self) -> dict[str, float | int]:
        return {
            "mIoU": self.miou,
            f"box_acc@{self.box_threshold:g}": self.box_acc,
            "invalid": self.invalid,
            "total": self.total,
        }


def refseg_scores(examples: Sequence[RefSegExample], box_threshold: float = 0.5) -> RefSegResult:
    """mIoU and box accuracy over examples (see the module doc); an empty list gives zeros."""
    ious, hits, invalid = [], 0, 0
    for ex in examples:
        if ex.pred_mask is None:
            invalid += 1
            ious.append(0.0)
        else:
            ious.append(mask_iou(to_mask(ex.pred_mask), to_mask(ex.gt_mask)))
        if ex.pred_box is not None and box_iou(ex.pred_box, ex.gt_box) >= box_threshold:
            hits += 1
    n = len(ious)
    return RefSegResult(
        miou=float(np.mean(ious)) if n else 0.0,
        box_acc=hits / n if n else 0.0,
        box_threshold=box_threshold,
        invalid=invalid,
        total=n,
        ious=tuple(ious),
    )
