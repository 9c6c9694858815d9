"""This toolkit's own label rows (`jobs.label --output OUT`) as pseudo-labels for self-training.

The rows of one image (several with `--per-class`) are merged; error rows are left out and counted; the
objects go through the same `labeling.ObjectFilter` as the exports (`--min-score`, `--class-thresholds`,
`--nms`), so a score threshold means here what it means there. Masks are the rows' COCO RLE.
"""

from __future__ import annotations

from pathlib import Path

from labeling.filters import ObjectFilter
from records.base import Item, Obj, Problems, clip_box
from tasks import CLASS_TASKS


def prediction_items(output: str, object_filter: ObjectFilter, problems: Problems) -> list[Item]:
    from decoders import rle_to_mask
    from rows import iter_rows
    from storage import is_uri

    folder = (
        output if is_uri(output) or not (Path(output) / "predictions").is_dir() else str(Path(output) / "predictions")
    )
    merged: dict[int, dict] = {}
    for row in iter_rows(folder):
        where = f"{row.get('path')} ({row.get('prompt')})"
        if row.get("error"):
            problems.add("error row left out", where)
            continue
        if row.get("task") not in CLASS_TASKS:
            problems.add("text row left out (no objects to learn)", where)
            continue
        current = merged.setdefault(int(row["image_id"]), {"row": row, "objects": []})
        current["objects"].extend(row.get("objects") or [])
    items = []
    for image_id, entry in merged.items():
        row = entry["row"]
        w, h = int(row["width"]), int(row["height"])
        objects = []
        for o in object_filter(entry["objects"]) if object_filter.active else entry["objects"]:
            box = clip_box(tuple(o["box"]), w, h, problems, row["path"])
            if box is not None:
                mask = rle_to_mask(o["mask"]) if o.get("mask") else None
                objects.append(Obj(str(o["label"]), box, mask))
        items.append(Item(str(row["path"]), w, h, tuple(objects), image_id))
    return items
