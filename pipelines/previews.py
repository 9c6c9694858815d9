"""Annotated previews of output rows: the image with its objects (boxes, masks, labels, scores) or its answer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from decoders import rle_to_mask
from pipelines.decode import decode_image, read_bytes
from tasks.detections import Detections


def row_detections(row: dict, classes: Sequence[str] = ()) -> Detections:
    """An output row's `objects` -> Detections (masks decoded from RLE; an object without one gets an empty mask)."""
    objects = row["objects"] or []
    n = len(objects)
    mask = None
    if any(o["mask"] is not None for o in objects):
        mask = np.zeros((n, row["height"], row["width"]), dtype=bool)
        for i, o in enumerate(objects):
            if o["mask"] is not None:
                mask[i] = rle_to_mask(o["mask"])
    scores = [o["score"] for o in objects]
    return Detections(
        xyxy=np.array([o["box"] for o in objects], dtype=np.float64).reshape(n, 4),
        mask=mask,
        confidence=None if n == 0 or any(s is None for s in scores) else np.array(scores, dtype=np.float64),
        class_id=np.array([list(classes).index(o["label"]) if o["label"] in classes else -1 for o in objects]),
        labels=np.array([o["label"] for o in objects], dtype=str),
    )


def draw_row(row: dict, classes: Sequence[str] = ()) -> Image.Image:
    """The row's image with its objects drawn on; a text answer is written in a band under the image."""
    from tasks.draw import draw_detections

    image = decode_image(read_bytes(row["path"]))  # as the pipeline saw it: upright, 16-bit scaled
    if row["objects"]:
        return draw_detections(image, row_detections(row, classes))
    text = (row["text"] or "(empty answer)").replace("\n", " ")
    band = 24
    canvas = Image.new("RGB", (image.width, image.height + band), "white")
    canvas.paste(image, (0, 0))
    ImageDraw.Draw(canvas).text((4, image.height + 5), text[: max(8, image.width // 6)], fill="black")
    return canvas
