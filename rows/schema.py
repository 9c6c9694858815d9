"""The output row: one per (image, prompt), the contract between the model replicas, the Parquet files, exports,
evaluation and the web page.

A row is a plain dict (what Arrow's `to_pylist` gives back and `from_pylist` takes), typed here as `Row`:

    image_id  int64    the image's id (a COCO id, or a stable hash of its path)
    path      string   where the image was read from: a local path or a URI such as s3://bucket/a.jpg
    width     int64    the image's size in pixels (0 when it could not be read)
    height    int64
    task      string   the task that read the answer: detect, segment, caption, describe, answer, ocr or raw
    prompt    string   the prompt sent to the model
    text      string   the raw generated text, <loc>/<seg> tokens kept
    objects   list     {label, box [x0, y0, x1, y1] in pixels, score, mask (COCO RLE {size [h, w], counts})}
    error     string   null on success; what went wrong otherwise (the row is still written)
    error_kind string  null on success; which kind of error (labeling/errors.py: read, decode, ...), set where the
                       error row is made, so that `--retry-errors` chooses by it and never by the message's words
    model     string   the checkpoint's name
    seconds   float64  model time spent on this row
    tile_texts list    a tiled row's answers, one per tile (in the order of labeling.tiles.TileConfig.boxes); null
                       for a row of a whole image
    tiles     int64    a tiled row's number of tiles; null for a row of a whole image

Scores come from the model (exp of the mean log-probability of the object's tokens), never a constant.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypedDict

import pyarrow as pa

MASK_TYPE = pa.struct([("size", pa.list_(pa.int64())), ("counts", pa.string())])
OBJECT_TYPE = pa.struct(
    [("label", pa.string()), ("box", pa.list_(pa.float64())), ("score", pa.float64()), ("mask", MASK_TYPE)]
)
ROW_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("path", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("task", pa.string()),
        ("prompt", pa.string()),
        ("text", pa.string()),
        ("objects", pa.list_(OBJECT_TYPE)),
        ("error", pa.string()),
        ("error_kind", pa.string()),
        ("model", pa.string()),
        ("seconds", pa.float64()),
        ("tile_texts", pa.list_(pa.string())),
        ("tiles", pa.int64()),
    ]
)


class MaskRLE(TypedDict):
    size: list[int]  # [height, width]
    counts: str  # COCO's compressed RLE string


class ObjectRow(TypedDict):
    label: str
    box: list[float]  # x0, y0, x1, y1 in pixels of the original image
    score: float | None
    mask: MaskRLE | None


class Row(TypedDict):
    image_id: int
    path: str
    width: int
    height: int
    task: str
    prompt: str
    text: str
    objects: list[ObjectRow]
    error: str | None
    error_kind: str | None
    model: str
    seconds: float
    tile_texts: list[str] | None  # absent (null) in a row of a whole image
    tiles: int | None


def error_row(image_id: int, path: str, prompt: str, task: str, error: str, kind: str, model: str = "") -> Row:
    """The row of an input that produced no answer: it is written all the same, so nothing goes missing.
    kind: the error's kind (labeling.errors.KINDS)."""
    return Row(
        image_id=int(image_id),
        path=path,
        width=0,
        height=0,
        task=task,
        prompt=prompt,
        text="",
        objects=[],
        error=error,
        error_kind=kind,
        model=model,
        seconds=0.0,
    )


def rows_to_table(rows: Iterable[Row]) -> pa.Table:
    """Rows -> an Arrow table with exactly ROW_SCHEMA's columns, in order."""
    return pa.Table.from_pylist(list(rows), schema=ROW_SCHEMA)


def conform(table: pa.Table) -> pa.Table:
    """A table of rows as ROW_SCHEMA has them: columns that parts written by an earlier version lack (error_kind,
    tile_texts, tiles) are added as nulls, so old outputs still read, resume and export."""
    for name in ROW_SCHEMA.names:
        if name not in table.column_names:
            table = table.append_column(ROW_SCHEMA.field(name), pa.nulls(table.num_rows, ROW_SCHEMA.field(name).type))
    return table.select(ROW_SCHEMA.names).cast(ROW_SCHEMA)
