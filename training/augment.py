"""Augmentation that keeps answers true: flips and zooms that move boxes and masks with the pixels, and object
order reshuffled per epoch.

Only object records (detect / segment prompts) are touched: a caption, an OCR word or an answer cannot be moved
with the image (a flipped word is not the word), and a record whose prompt or answer says "left" or "right" is
never flipped, since the flip would make it false. A record's objects come from its `objects` field
(jobs.make_records writes them, with masks for segment records) or, for records written by hand, from its answer
parsed back (boxes only: a record with `<seg>` codes and no masks can be reordered but not moved, because a mask
cannot be moved without being known). After a move the answer is written again by `decoders.format_object`, masks
re-encoded with the VQ-VAE's encoder exactly as jobs.make_records encodes them.

- flip (`--hflip P`): with probability P, x -> W - x for the image, every box and every mask.
- zoom (`--scale-jitter J`): the image is scaled by s in [1 - J, 1 + J] and cut (s > 1) or padded with its mean
  colour (s < 1) back to its size at a random offset; boxes are mapped by the same affine map and clipped to the
  frame, masks resized with nearest neighbours and moved alike; an object left with less than a pixel of width or
  height is dropped from the answer (it is no longer visible).
- shuffle (`--shuffle-objects`, or records marked `shuffle`): the objects' order, drawn anew each epoch.

Every draw comes from `default_rng([seed, epoch, index])`, so a resumed run sees the same augmented examples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tasks import CLASS_TASKS

SIDES = re.compile(r"\b(left|right)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Augment:
    hflip: float = 0.0
    scale_jitter: float = 0.0
    shuffle_objects: bool = False

    @property
    def active(self) -> bool:
        return bool(self.hflip or self.scale_jitter or self.shuffle_objects)


@dataclass
class Moved:
    """An object being augmented: label, box (x0, y0, x1, y1) in pixels, mask bool[H, W] or None, and the seg codes
    of a hand-written answer (kept as they are: they describe the mask in its box, which only a move changes)."""

    label: str
    box: tuple[float, float, float, float]
    mask: np.ndarray | None = None
    codes: tuple[int, ...] | None = None


def is_object_record(prefix: str, task: str = "") -> bool:
    return (task or prefix.split(" ", 1)[0]) in CLASS_TASKS


def objects_of(record_objects: list[dict] | None, suffix: str, width: int, height: int, masks: bool) -> list[Moved]:
    """The record's objects: from its `objects` field (masks only for a segment record), else parsed from its
    answer."""
    from decoders import parse_objects, rle_to_mask

    if record_objects is not None:
        return [Moved(o["label"], tuple(o["box"]), rle_to_mask(o["mask"]) if masks and o.get("mask") else None)
                for o in record_objects]  # fmt: skip
    return [Moved(o.label, o.box, None, o.seg_tokens) for o in parse_objects(suffix, width, height)]


def flip(image: Image.Image, objects: list[Moved]) -> Image.Image:
    w = image.width
    for o in objects:
        x0, y0, x1, y1 = o.box
        o.box = (w - x1, y0, w - x0, y1)
        if o.mask is not None:
            o.mask = o.mask[:, ::-1].copy()
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def zoom(image: Image.Image, objects: list[Moved], scale: float, rng: np.random.Generator) -> tuple[Image.Image, list]:
    """Scale by `scale` about a random offset, keeping the image's size (see the module docstring)."""
    w, h = image.size
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    ox = int(rng.integers(min(0, nw - w), max(0, nw - w) + 1))  # new-image pixel at the output's left edge
    oy = int(rng.integers(min(0, nh - h), max(0, nh - h) + 1))
    mean = tuple(int(v) for v in np.asarray(image).reshape(-1, 3).mean(0))
    canvas = Image.new("RGB", (w, h), mean)
    canvas.paste(image.resize((nw, nh), Image.Resampling.BILINEAR), (-ox, -oy))
    sx, sy = nw / w, nh / h
    kept = []
    for o in objects:
        x0, y0, x1, y1 = o.box
        box = (max(0.0, x0 * sx - ox), max(0.0, y0 * sy - oy), min(float(w), x1 * sx - ox), min(float(h), y1 * sy - oy))
        if box[2] - box[0] < 1.0 or box[3] - box[1] < 1.0:
            continue  # pushed out of the frame: no longer in the image, so no longer in the answer
        if o.mask is not None:
            m = Image.fromarray(o.mask.astype(np.uint8) * 255).resize((nw, nh), Image.Resampling.NEAREST)
            frame = Image.new("L", (w, h), 0)
            frame.paste(m, (-ox, -oy))
            o.mask = np.asarray(frame) > 127
        o.box = box
        kept.append(o)
    return canvas, kept


def augment_record(image, prefix: str, suffix: str, task: str, objects: list[dict] | None, shuffle: bool,
                   aug: Augment, rng: np.random.Generator, encoder=None) -> tuple[Image.Image, str]:  # fmt: skip
    """(image, suffix) after augmentation; the record as it was when nothing applies."""
    from decoders import format_object

    if not is_object_record(prefix, task) or not (aug.active or shuffle):
        return image, suffix
    w, h = image.size
    moved = objects_of(objects, suffix, w, h, masks=(task or prefix.split(" ", 1)[0]) == "segment")
    has_codes = any(o.codes is not None for o in moved)
    needs_encoder = any(o.mask is not None for o in moved)
    movable = not has_codes and (encoder is not None or not needs_encoder)
    changed = False
    if movable and aug.hflip and rng.random() < aug.hflip and not SIDES.search(prefix + " " + suffix):
        image, changed = flip(image, moved), True
    if movable and aug.scale_jitter:
        image, moved = zoom(image, moved, float(rng.uniform(1 - aug.scale_jitter, 1 + aug.scale_jitter)), rng)
        changed = True
    if aug.shuffle_objects or shuffle:
        moved = [moved[i] for i in rng.permutation(len(moved))]
        changed = True
    if not changed:
        return image, suffix
    codes = _codes(moved, encoder)
    return image, " ; ".join(format_object(o.box, w, h, o.label, c) for o, c in zip(moved, codes, strict=True))


def _codes(objects: list[Moved], encoder) -> list:
    """Seg codes for each object: re-encoded from its (moved) mask, or the answer's own when it had no mask."""
    import torch

    from decoders.masks import crop_to_box

    with_mask = [i for i, o in enumerate(objects) if o.mask is not None]
    out = [o.codes for o in objects]
    if with_mask and encoder is not None:
        crops = torch.stack([crop_to_box(objects[i].mask, objects[i].box) for i in with_mask])
        for i, c in zip(with_mask, encoder.encode(crops).tolist(), strict=True):
            out[i] = c
    return out
