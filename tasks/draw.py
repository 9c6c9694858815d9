"""Annotated previews: boxes, masks and labels drawn with supervision's annotators onto a PIL image.

Used by the single-image command (`--save`), the pipeline's previews and any UI. Labels are drawn with PIL
(supervision's RichLabelAnnotator) rather than OpenCV's Hershey fonts, which have no glyphs outside ASCII; pass a
`font_path` with the needed script (e.g. a Noto font) for Japanese, Arabic and the like.
"""

from __future__ import annotations

import numpy as np
import supervision as sv
from PIL import Image

from tasks.adapters import to_supervision
from tasks.detections import Detections


def label_texts(detections: Detections, show_scores: bool = True) -> list[str]:
    """'label 0.87' per object (the score only when there is one)."""
    texts = []
    for i, label in enumerate(detections.labels):
        text = str(label) or "object"
        if show_scores and detections.confidence is not None:
            text += f" {detections.confidence[i]:.2f}"
        texts.append(text)
    return texts


def draw_detections(
    image: Image.Image,
    detections: Detections,
    show_scores: bool = True,
    font_path: str | None = None,
    font_size: int = 14,
    mask_opacity: float = 0.5,
) -> Image.Image:
    """Return a new RGB image with masks (if any), boxes and labels drawn on; the input is left unchanged."""
    scene = np.array(image.convert("RGB"))
    if len(detections) == 0:
        return Image.fromarray(scene)
    if detections.mask is not None and detections.mask.shape[1:] != scene.shape[:2]:
        raise ValueError(f"expected masks of the image size {scene.shape[:2]} but got {detections.mask.shape[1:]}")
    dets = to_supervision(detections)
    if dets.mask is not None:
        scene = sv.MaskAnnotator(opacity=mask_opacity).annotate(scene, dets)
    scene = sv.BoxAnnotator().annotate(scene, dets)
    labeler = sv.RichLabelAnnotator(font_path=font_path, font_size=font_size, smart_position=True)
    scene = labeler.annotate(scene, dets, labels=label_texts(detections, show_scores))
    return scene if isinstance(scene, Image.Image) else Image.fromarray(np.asarray(scene))
