"""Converters between our `Detections` and `supervision.Detections`, kept outside both classes.

supervision keeps labels in `data["class_name"]`, as its own `from_vlm` does, so its annotators and exporters
find them where they look.
"""

from __future__ import annotations

import numpy as np
import supervision as sv

from tasks.detections import Detections

CLASS_NAME = "class_name"


def to_supervision(detections: Detections) -> sv.Detections:
    """Our Detections -> supervision.Detections (labels in data["class_name"])."""
    return sv.Detections(
        xyxy=detections.xyxy.astype(np.float32),
        mask=None if detections.mask is None else detections.mask.copy(),
        confidence=None if detections.confidence is None else detections.confidence.astype(np.float32),
        class_id=detections.class_id.astype(int),
        data={CLASS_NAME: detections.labels.copy()},
    )


def from_supervision(detections: sv.Detections) -> Detections:
    """supervision.Detections -> ours. Missing class ids become -1, missing labels "" (a CompactMask is densified)."""
    n = len(detections)
    mask = detections.mask
    if mask is not None and not isinstance(mask, np.ndarray):
        mask = mask.to_dense()  # supervision's CompactMask
    labels = detections.data.get(CLASS_NAME)
    return Detections(
        xyxy=np.asarray(detections.xyxy, dtype=np.float64).reshape(n, 4),
        mask=None if mask is None else np.asarray(mask, dtype=bool),
        confidence=None if detections.confidence is None else np.asarray(detections.confidence, dtype=np.float64),
        class_id=np.full(n, -1) if detections.class_id is None else np.asarray(detections.class_id, dtype=np.int64),
        labels=np.full(n, "", dtype=str) if labels is None else np.asarray(labels, dtype=str),
    )
