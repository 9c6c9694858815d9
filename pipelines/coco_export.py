"""Output rows (DESIGN.md §7) -> COCO files: a results list for evaluation and a full dataset for auto-labeling.

Both are plain JSON that pycocotools (`COCO`, `COCO.loadRes`) and `supervision.DetectionDataset.from_coco` load.
Boxes become [x, y, w, h] in pixels; category ids come from the classes (1-based, or a COCO source's own ids for
names it already has); a mask goes in as its COCO RLE and gives the area, a box alone gives w * h (and, in the
dataset file, the box polygon as its segmentation, as pycocotools' loadRes does for box results); `iscrowd` is 0.
Objects whose label is not one of the classes (a model may write any text) are left out and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from evals.convert import object_to_result


def categories_for(classes: Sequence[str], known: Iterable[dict] = ()) -> list[dict]:
    """[{id, name}] for the classes: a known category's id where the name matches, fresh ids (from 1) otherwise."""
    by_name = {c["name"]: int(c["id"]) for c in known}
    used = set(by_name.values())
    out, next_id = [], 1
    for name in dict.fromkeys(classes):  # unique, in order
        if name in by_name:
            out.append({"id": by_name[name], "name": name})
            continue
        while next_id in used:
            next_id += 1
        used.add(next_id)
        out.append({"id": next_id, "name": name})
    return out


def object_annotation(obj: dict, image_id: int, category_id: int) -> dict:
    """One object row -> {image_id, category_id, bbox, score, area[, segmentation]}.

    The result part is evals' own converter, so that what the label job exports and what evals scores agree; the
    area (a dataset file needs one) is the mask's when there is a mask, the box's otherwise.
    """
    ann = object_to_result(obj, image_id, category_id)
    if "segmentation" in ann:
        from pycocotools import mask as mask_utils

        rle = ann["segmentation"]
        ann["area"] = float(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))
    else:
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    return ann


def box_polygon(bbox: Sequence[float]) -> list[list[float]]:
    """The box as a one-polygon segmentation, what pycocotools' loadRes gives a box-only result."""
    x, y, w, h = bbox
    return [[x, y, x, y + h, x + w, y + h, x + w, y]]


def rows_to_annotations(rows: Iterable[dict], categories: Sequence[dict]) -> tuple[list[dict], int]:
    """All objects of the rows with a known label, and how many objects had a label outside the categories."""
    ids = {c["name"]: c["id"] for c in categories}
    anns, unknown = [], 0
    for row in rows:
        if row.get("error"):
            continue
        for obj in row.get("objects") or ():
            if obj["label"] not in ids:
                unknown += 1
                continue
            anns.append(object_annotation(obj, row["image_id"], ids[obj["label"]]))
    return anns, unknown


def results_file(rows: Iterable[dict], categories: Sequence[dict]) -> tuple[list[dict], int]:
    """The COCO results list ({image_id, category_id, bbox, score[, segmentation]}) and the unknown-label count."""
    anns, unknown = rows_to_annotations(rows, categories)
    for ann in anns:
        del ann["area"]  # loadRes recomputes it; results files do not carry it
    return anns, unknown


def dataset_file(
    rows: Sequence[dict], categories: Sequence[dict], file_names: dict[int, str] | None = None, min_score: float = 0.0
) -> dict:
    """A COCO dataset: every image that decoded (with or without objects), its objects scoring >= min_score as
    annotations (ids from 1, iscrowd 0, the model's score kept as an extra field), and the categories."""
    file_names = file_names or {}
    images, seen = [], set()
    for row in rows:
        if row.get("error") or row["image_id"] in seen:
            continue
        seen.add(row["image_id"])
        name = file_names.get(row["image_id"], row["path"])
        images.append({"id": int(row["image_id"]), "file_name": name, "width": row["width"], "height": row["height"]})
    anns, _ = rows_to_annotations(rows, categories)
    kept = [a for a in anns if a["score"] >= min_score]
    for i, ann in enumerate(kept, start=1):
        ann["id"] = i
        ann["iscrowd"] = 0
        if "segmentation" not in ann:  # COCO tools expect one on every annotation (segm evaluation reads it)
            ann["segmentation"] = box_polygon(ann["bbox"])
    return {
        "info": {"description": "labeled by paligemma-batch (python -m jobs.label)"},
        "images": images,
        "annotations": kept,
        "categories": [{"id": c["id"], "name": c["name"], "supercategory": "none"} for c in categories],
    }
