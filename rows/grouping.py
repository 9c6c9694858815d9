"""Each image's rows together, wherever they are in the parts.

An image's rows need not be next to each other: with several prompts per image (`--per-class`), rows finish in
any order and land in different parts, and a resumed run adds parts of its own. Exports write one file (or task,
or COCO image entry) per image with all of its objects, so they read the rows grouped by image.

Without holding the run in memory: when the output has more rows than `max_rows`, a first pass spills the rows
into hash buckets by image id (Parquet files in a temporary folder, each bucket small enough to hold), and each
bucket is then grouped on its own. Smaller outputs are grouped in memory at once. Within an image, rows keep the
order they were written in; images come in the order of their first row (within a bucket).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rows.parts import PartStore
from rows.schema import Row

MAX_ROWS_IN_MEMORY = 50_000


def _grouped(table: pa.Table) -> Iterator[list[Row]]:
    """The rows of `table`, image by image (images in order of their first row; rows in table order)."""
    ids = table["image_id"].to_numpy()
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first, kind="stable"), kind="stable")[inverse]  # image's place by first row
    order = np.lexsort((np.arange(len(ids)), rank))
    rows = table.take(pa.array(order)).to_pylist()
    start = 0
    for end in range(1, len(rows) + 1):
        if end == len(rows) or rows[end]["image_id"] != rows[start]["image_id"]:
            yield rows[start:end]  # type: ignore[misc]
            start = end


def rows_by_image(store: PartStore, columns: Sequence[str] | None = None,
                  max_rows: int = MAX_ROWS_IN_MEMORY) -> Iterator[list[Row]]:  # fmt: skip
    """Lists of the rows of one image each, over every committed part (see the module docstring)."""
    total = store.count()
    if total == 0:
        return
    if total <= max_rows:
        yield from _grouped(pa.concat_tables(list(store.iter_tables(columns))))
        return
    buckets = math.ceil(total / max_rows) * 2  # hash buckets hold max_rows / 2 rows on average
    folder = tempfile.mkdtemp(prefix="rows-by-image-")
    try:
        for n, table in enumerate(store.iter_tables(columns)):
            # Spread ids by a multiplicative hash: image ids may share low bits (a COCO file's 1, 2, 3 ...).
            ids = np.ascontiguousarray(table["image_id"].to_numpy(), dtype=np.int64)
            key = ids.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            bucket = (key >> np.uint64(40)) % np.uint64(buckets)
            for b in np.unique(bucket):
                os.makedirs(os.path.join(folder, str(b)), exist_ok=True)
                part = table.filter(pa.array(bucket == b))
                pq.write_table(part, os.path.join(folder, str(b), f"{n:08d}.parquet"))
        for b in sorted(os.listdir(folder), key=int):
            files = sorted(os.listdir(os.path.join(folder, b)))
            yield from _grouped(pa.concat_tables([pq.read_table(os.path.join(folder, b, f)) for f in files]))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
