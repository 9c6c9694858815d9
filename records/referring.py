"""Tables of referring expressions (Parquet, CSV or JSONL): one row per (image, expression, object).

Columns: `image` (a path relative to the table's folder, absolute, or a URI), `expression`, and `box`
([x0, y0, x1, y1] in pixels) and/or `mask` (a COCO polygon list or RLE; CSV cells hold them as JSON). A row
with a mask becomes `segment <expression>` (when the task is segment), one with a box only `detect
<expression>`; the answer is the object's locations (and `<seg>` codes) without a label, as big_vision's
referring-expression targets are. Rows of one image and expression are one record with several objects.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

from records.base import Item, Obj, Problems, clip_box, image_size, mask_box
from records.coco import coco_mask
from storage import is_uri


def read_table(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".csv":
        import pandas as pd

        return pd.read_csv(path).to_dict("records")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    raise ValueError(f"{path}: expected a .parquet, .csv or .jsonl table")


def _cell(value):
    if isinstance(value, str):
        value = value.strip()
        return json.loads(value) if value.startswith(("[", "{")) else None
    return None if value is None or (isinstance(value, float) and value != value) else value


def referring_items(table: str | Path, problems: Problems) -> list[Item]:
    path = Path(table)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for n, row in enumerate(read_table(path)):
        image, expression = row.get("image"), row.get("expression")
        if not image or not isinstance(expression, str) or not expression.strip():
            problems.add("row without image or expression", f"{path.name} row {n}")
            continue
        image = str(image) if is_uri(str(image)) or os.path.isabs(str(image)) else str(path.parent / str(image))
        groups[(image, expression.strip())].append(row | {"_where": f"{path.name} row {n}"})
    sizes: dict[str, tuple[int, int] | None] = {}
    items = []
    for (image, expression), rows in groups.items():
        if image not in sizes:
            sizes[image] = image_size(image)
        if sizes[image] is None:
            problems.add("missing image", image)
            continue
        w, h = sizes[image]
        objects = [o for r in rows if (o := _object(r, w, h, problems)) is not None]
        if objects:
            items.append(Item(image, w, h, tuple(objects), expression=expression))
    return items


def _object(row: dict, w: int, h: int, problems: Problems) -> Obj | None:
    where = row["_where"]
    box, seg = _cell(row.get("box")), _cell(row.get("mask"))
    mask = coco_mask(seg, w, h, problems, where) if seg else None
    if seg and mask is None:
        return None
    if box is None and mask is not None:
        box = mask_box(mask)
    if box is None or len(box) != 4:
        problems.add("row without a box or mask", where)
        return None
    box = clip_box(tuple(float(v) for v in box), w, h, problems, where)
    return None if box is None else Obj("", box, mask)
