"""Annotated previews of output rows: the image with its objects (boxes, masks, labels, scores) or its answer."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from labeling.images import decode_image
from tasks.detections import Detections


def draw_row(row: dict, classes: Sequence[str], data: bytes) -> Image.Image:
    """The row's image (its file's bytes) with its objects drawn on; a text answer is written under the image."""
    from tasks.draw import draw_detections

    image = decode_image(data)  # as the pipeline saw it: upright, 16-bit scaled
    if row["objects"]:
        return draw_detections(image, Detections.from_row(row, classes))
    text = (row["text"] or "(empty answer)").replace("\n", " ")
    band = 24
    canvas = Image.new("RGB", (image.width, image.height + band), "white")
    canvas.paste(image, (0, 0))
    ImageDraw.Draw(canvas).text((4, image.height + 5), text[: max(8, image.width // 6)], fill="black")
    return canvas
