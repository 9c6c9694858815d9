"""`Detections`: the objects of one image as arrays aligned on axis 0, the shape supervision and COCO tools expect.

Modelled on supervision's `Detections` (validated on construction, boolean and slice indexing) but without its
dependency: converters to and from `supervision.Detections` live in `tasks.adapters`. Legend: N objects, H x W image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    """xyxy float[N, 4] pixels; mask bool[N, H, W] or None; confidence float[N] or None (no log-probs given);
    class_id int[N], the index of the label in the task's class list, -1 for a label outside it; labels str[N]."""

    xyxy: np.ndarray
    mask: np.ndarray | None = None
    confidence: np.ndarray | None = None
    class_id: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float64)
        if xyxy.size == 0:  # [] or np.empty(0): no objects
            xyxy = xyxy.reshape(0, 4)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise ValueError(f"expected xyxy of shape (N, 4) but got {xyxy.shape}")
        n = len(xyxy)
        object.__setattr__(self, "xyxy", xyxy)
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.ndim != 3 or len(mask) != n:
                raise ValueError(f"expected mask of shape ({n}, H, W) but got {mask.shape}")
            if mask.dtype != np.bool_:
                raise ValueError(f"expected mask of dtype bool but got {mask.dtype}")
            object.__setattr__(self, "mask", mask)
        if self.confidence is not None:
            object.__setattr__(self, "confidence", _vector(self.confidence, n, "confidence", np.float64))
        class_id = np.full(n, -1, dtype=np.int64) if self.class_id is None else self.class_id
        object.__setattr__(self, "class_id", _vector(class_id, n, "class_id", np.int64))
        labels = [""] * n if self.labels is None else self.labels
        object.__setattr__(self, "labels", _vector(np.asarray(labels, dtype=str), n, "labels", str))

    @classmethod
    def from_row(cls, row, classes: Sequence[str] = ()) -> Detections:
        """An output row's `objects` (rows.Row) -> Detections; masks decoded from their RLE (an object without
        one gets an empty mask when others have one); class_id is the label's index in `classes`, else -1."""
        from decoders import rle_to_mask

        objects = row["objects"] or []
        n = len(objects)
        mask = None
        if any(o["mask"] is not None for o in objects):
            mask = np.zeros((n, row["height"], row["width"]), dtype=bool)
            for i, o in enumerate(objects):
                if o["mask"] is not None:
                    mask[i] = rle_to_mask(o["mask"])
        scores = [o["score"] for o in objects]
        return cls(
            xyxy=np.array([o["box"] for o in objects], dtype=np.float64).reshape(n, 4),
            mask=mask,
            confidence=None if n == 0 or any(s is None for s in scores) else np.array(scores, dtype=np.float64),
            class_id=np.array([list(classes).index(o["label"]) if o["label"] in classes else -1 for o in objects]),
            labels=np.array([o["label"] for o in objects], dtype=str),
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: int | slice | np.ndarray | list) -> Detections:
        """Always returns Detections: an int keeps one object, a slice, int array or bool[N] array selects."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        if isinstance(index, np.ndarray) and index.dtype == np.bool_ and index.shape != (len(self),):
            raise IndexError(f"expected a boolean index of shape ({len(self)},) but got {index.shape}")
        return Detections(
            xyxy=self.xyxy[index],
            mask=None if self.mask is None else self.mask[index],
            confidence=None if self.confidence is None else self.confidence[index],
            class_id=self.class_id[index],
            labels=self.labels[index],
        )

    @classmethod
    def empty(cls) -> Detections:
        return cls(xyxy=np.zeros((0, 4)))


def _vector(value: object, n: int, name: str, dtype: type) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != (n,):
        raise ValueError(f"expected {name} of shape ({n},) but got {array.shape}")
    if dtype is np.int64 and array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"expected {name} of an integer dtype but got {array.dtype}")
    return array.astype(dtype)
