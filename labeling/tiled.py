"""Tiled labeling of whole images: each (image, prompt) cut into tiles (labeling/tiles.py), every tile labeled as
its own pair through `label_batch`, the tiles' objects merged back into one row in image pixels.

The label job's replicas and `python -m model --tile` call `label_tiled`, so a tiled row means the same thing
wherever it was made. Only object prompts (detect, segment, a raw prompt that writes boxes) are tiled: a caption or
an answer is about the whole picture, and is asked of the whole image, squashed as without tiling.

Tiles of all the rows of a call go through the model together, a chunk of pairs at a time (continuous batching
over tiles: a finished tile's slot takes the next tile), and the rows of one image share its tiles, so each tile
goes through the vision tower once however many prompts ask about it. A chunk bounds what is held at once: the
tiles of a 12,000 x 12,000 image weigh about as much as the image again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from decoders import format_object
from labeling.answers import Labeled, label_batch
from labeling.tiles import Box, TileConfig, TileObjects, cut_tiles, merge_tiles
from rows import Row
from tasks import Task

CHUNK = 256  # tile pairs labeled at once
# A whole-image pass of a huge image is placed in a frame of at most this side, and its objects scaled up
# (merge_tiles does it): its masks are pasted at this size, never on a canvas of the whole image.
FRAME = 2048


@dataclass
class _Pending:
    """One row being labeled tile by tile: its image's tiles, and what each tile gave so far."""

    index: int
    boxes: list[Box]
    objects: list[TileObjects] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: tuple[str, str] | None = None  # (message, kind) of the first tile that failed


def _frame(box: Box, width: int, height: int) -> tuple[int, int]:
    """The size a tile's objects are placed in: the tile's own, or for the whole-image pass of a huge image a
    smaller frame of the same shape."""
    w, h = box[2] - box[0], box[3] - box[1]
    if box != (0, 0, width, height) or max(w, h) <= FRAME:
        return w, h
    scale = FRAME / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def label_tiled(model, tasks: Sequence[Task], images: Sequence[np.ndarray], config: TileConfig, size: int, *,
                image_ids: Sequence[int], paths: Sequence[str], mask_decoder=None, max_new_tokens: int = 64,
                model_name: str = "", batch_size: int | None = None) -> list[Row]:  # fmt: skip
    """One row per (task i, image i): uint8[H, W, 3] images at full size, object tasks tiled as `config` says
    (tiles squashed to the model's `size`), other tasks asked of the whole image. Never raises for one input: a
    tile that fails makes its row an error row naming the tile."""
    rows: list[Row | None] = [None] * len(tasks)
    whole = [i for i, t in enumerate(tasks) if t.kind != "objects"]
    if whole:
        squashed = [
            np.asarray(Image.fromarray(images[i]).resize((size, size), Image.Resampling.BICUBIC)) for i in whole
        ]
        labeled = label_batch(model, [tasks[i] for i in whole], squashed, image_ids=[image_ids[i] for i in whole],
                              paths=[paths[i] for i in whole], sizes=[_size(images[i]) for i in whole],
                              mask_decoder=mask_decoder, max_new_tokens=max_new_tokens, model_name=model_name,
                              batch_size=batch_size)  # fmt: skip
        for i, item in zip(whole, labeled, strict=True):
            rows[i] = item.row
    pending = [_Pending(i, config.boxes(*_size(images[i]))) for i, t in enumerate(tasks) if t.kind == "objects"]
    for chunk in _chunks(pending, images, CHUNK):
        _label_chunk(model, chunk, tasks, images, size, mask_decoder, max_new_tokens, batch_size)
    for p in pending:
        rows[p.index] = _row(p, tasks[p.index], images[p.index], config, image_ids[p.index], paths[p.index],
                             model_name)  # fmt: skip
    return rows  # type: ignore[return-value]


def _size(image: np.ndarray) -> tuple[int, int]:
    return image.shape[1], image.shape[0]


def _chunks(pending: list[_Pending], images, chunk: int):
    """Lists of at most `chunk` (row, tile index) pairs, the rows of one image side by side for each tile: a chunk
    then holds a tile once for all its prompts, and generate sends it through the vision tower once."""
    by_image: dict[int, list[_Pending]] = {}
    for p in pending:
        by_image.setdefault(id(images[p.index]), []).append(p)
    out: list[tuple[_Pending, int]] = []
    for group in by_image.values():
        for k in range(len(group[0].boxes)):
            out += [(p, k) for p in group]
            if len(out) >= chunk:
                yield out
                out = []
    if out:
        yield out


def _label_chunk(model, chunk, tasks, images, size, mask_decoder, max_new_tokens, batch_size) -> None:
    """Label one chunk of tiles and keep each tile's objects and answer on its row."""
    tiles: dict[tuple[int, int], np.ndarray] = {}
    for p, k in chunk:
        key = (id(images[p.index]), k)
        if key not in tiles:
            tiles[key] = cut_tiles(images[p.index], [p.boxes[k]], size)[0]
    frames = [_frame(p.boxes[k], *_size(images[p.index])) for p, k in chunk]
    labeled: list[Labeled] = label_batch(
        model,
        [tasks[p.index] for p, _ in chunk],
        [tiles[(id(images[p.index]), k)] for p, k in chunk],
        sizes=frames,
        mask_decoder=mask_decoder,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    for (p, k), item, frame in zip(chunk, labeled, frames, strict=True):
        p.texts.append(item.row["text"])
        p.seconds += item.row["seconds"]
        if item.row["error"] is not None and p.error is None:
            box = p.boxes[k]
            p.error = (f"tile {k} ({box[0]}, {box[1]}, {box[2]}, {box[3]}): {item.row['error']}",
                       item.row["error_kind"])  # fmt: skip
        p.objects.append(TileObjects(p.boxes[k], item.row["objects"], frame))


def _row(p: _Pending, task: Task, image: np.ndarray, config: TileConfig, image_id: int, path: str, model: str) -> Row:
    """The row of one tiled (image, prompt): its merged objects in image pixels, written out as an answer too."""
    width, height = _size(image)
    row = Row(image_id=int(image_id), path=str(path), width=width, height=height, task=task.name,
              prompt=task.prompt(), text="", objects=[], error=None, error_kind=None, model=model,
              seconds=p.seconds)  # fmt: skip
    row |= {"tile_texts": p.texts, "tiles": len(p.boxes)}  # type: ignore[assignment]
    if p.error is not None:
        row["error"], row["error_kind"] = p.error
        return row
    row["objects"] = merge_tiles(p.objects, width, height, config)
    row["text"] = " ; ".join(format_object(o["box"], width, height, o["label"]) for o in row["objects"])
    return row
