"""Which objects of a row to keep: a minimum score, per-class thresholds, and non-maximum suppression.

PaliGemma repeats objects (more so after fine-tuning) and writes boxes for anything it was asked about, so an
auto-labeled dataset wants duplicates removed and weak objects dropped. Both need confidences, which this toolkit
has (the model's own token probabilities). NMS is supervision's `Detections.with_nms` on the boxes, per class by
default (an object only suppresses others of its label) or across classes; objects without a score are kept and
never suppress others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rows import ObjectRow, label_key
from specs.fields import SpecError, check, option


def parse_class_thresholds(text: str | None) -> dict[str, float]:
    """'cat=0.4,dog=0.6' -> {'cat': 0.4, 'dog': 0.6}; ValueError naming the bad entry."""
    out: dict[str, float] = {}
    for entry in (text or "").split(","):
        if not entry.strip():
            continue
        name, sep, value = entry.rpartition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--class-thresholds: expected NAME=SCORE entries like 'cat=0.4', got {entry!r}") from None
    return out


@dataclass(frozen=True)
class ObjectFilter:
    """min_score: objects scoring below it are dropped; class_thresholds: a per-label minimum that replaces
    min_score for that label (labels compared as rows.label_key does); nms_iou: boxes overlapping a
    higher-scoring box of the same label (any label with class_agnostic) by more than this IoU are dropped."""

    min_score: float = option(0.0, help="drop objects scoring below this")
    class_thresholds: dict[str, float] = option(help='per-class minimum scores, e.g. "cat=0.4,dog=0.6"',
                                                parse=parse_class_thresholds, metavar="CLS=S,...",
                                                default_factory=dict)  # fmt: skip
    nms_iou: float | None = option(None, flag="--nms", metavar="IOU",
                                   help="drop boxes overlapping a better one of their class above IOU")  # fmt: skip
    class_agnostic: bool = option(False, flag="--class-agnostic-nms", help="NMS across classes, not within each")

    def __post_init__(self) -> None:
        check(0.0 <= self.min_score <= 1.0, self, "min_score", f"must be a number in [0, 1], got {self.min_score}")
        for name, value in self.class_thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise SpecError(f"--class-thresholds: scores lie in [0, 1], got {value} for {name}")
        check(self.nms_iou is None or 0.0 < self.nms_iou <= 1.0, self, "nms_iou",
              f"takes an IoU in (0, 1], got {self.nms_iou}")  # fmt: skip
        keyed = {label_key(k): float(v) for k, v in self.class_thresholds.items()}
        object.__setattr__(self, "class_thresholds", keyed)

    @property
    def active(self) -> bool:
        return bool(self.min_score > 0 or self.class_thresholds or self.nms_iou is not None)

    def settings(self) -> dict:
        return {
            "min_score": self.min_score,
            "class_thresholds": dict(sorted(self.class_thresholds.items())),
            "nms_iou": self.nms_iou,
            "class_agnostic": self.class_agnostic,
        }

    def threshold(self, label: str) -> float:
        return self.class_thresholds.get(label_key(label), self.min_score)

    def __call__(self, objects: Sequence[ObjectRow]) -> list[ObjectRow]:
        kept = [o for o in objects if o["score"] is None or o["score"] >= self.threshold(o["label"])]
        if self.nms_iou is None or len(kept) < 2:
            return kept
        scored = [i for i, o in enumerate(kept) if o["score"] is not None]
        survivors = set(_nms([kept[i] for i in scored], self.nms_iou, self.class_agnostic))
        return [o for i, o in enumerate(kept) if o["score"] is None or scored.index(i) in survivors]


def _nms(objects: list[ObjectRow], iou: float, class_agnostic: bool) -> list[int]:
    """Indices (into `objects`) of the boxes supervision's NMS keeps."""
    if not objects:
        return []
    import supervision as sv

    labels = sorted({label_key(o["label"]) for o in objects})
    detections = sv.Detections(
        xyxy=np.array([o["box"] for o in objects], dtype=np.float32).reshape(-1, 4),
        confidence=np.array([o["score"] for o in objects], dtype=np.float32),
        class_id=np.array([labels.index(label_key(o["label"])) for o in objects], dtype=int),
        data={"index": np.arange(len(objects))},
    )
    kept = detections.with_nms(threshold=iou, class_agnostic=class_agnostic)
    return sorted(int(i) for i in kept.data["index"])
