"""Rows <-> COCO: results lists for evaluation, dataset files for training, with one rule for matching labels.

**Label matching.** The model writes the class names it was prompted with, but not always in the dataset's
capitalization or spacing ("Cat", "traffic  light"). A label matches a category when the two are equal after
case folding and collapsing runs of whitespace (`label_key`). The label job's exports and `python -m evals` both
go through this module, so an object that one keeps the other keeps too. A label that matches no category is
dropped and counted, as are rows whose `error` is set: nothing is dropped silently.

Boxes become [x, y, w, h] in pixels; a mask goes in as its COCO RLE; an object without a score (a backend that
gives none) scores 1.0, since COCO results need one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from rows.schema import ObjectRow, Row


def label_key(label: str) -> str:
    """The form labels and category names are compared in: case-folded, inner whitespace collapsed."""
    return " ".join(label.casefold().split())


def category_ids(categories: Sequence[Mapping] | Mapping[str, int]) -> dict[str, int]:
    """label_key(name) -> category id, from COCO `categories` or a plain name -> id mapping."""
    if isinstance(categories, Mapping):
        return {label_key(name): int(cid) for name, cid in categories.items()}
    return {label_key(c["name"]): int(c["id"]) for c in categories}


def categories_for(classes: Sequence[str], known: Iterable[Mapping] = ()) -> list[dict]:
    """[{id, name}] for the classes: a known category's id (and spelling) where the name matches, fresh ids
    (from 1, skipping the known ones) otherwise. Classes equal under `label_key` become one category."""
    known_by_key = {label_key(c["name"]): (int(c["id"]), str(c["name"])) for c in known}
    used = {cid for cid, _ in known_by_key.values()}
    out, keys, next_id = [], set(), 1
    for name in classes:
        key = label_key(name)
        if key in keys:
            continue
        keys.add(key)
        if key in known_by_key:
            cid, known_name = known_by_key[key]
            out.append({"id": cid, "name": known_name})
            continue
        while next_id in used:
            next_id += 1
        used.add(next_id)
        out.append({"id": next_id, "name": name})
    return out


@dataclass
class ConversionReport:
    """Counts of what a conversion kept and dropped."""

    rows: int = 0
    error_rows: int = 0
    objects: int = 0
    results: int = 0
    masks: int = 0
    unmatched_images: int = 0  # rows whose image is not in the ground truth (by id or file name)
    unknown_labels: Counter = field(default_factory=Counter)  # label -> objects dropped

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "unknown_labels"}
        out["unknown_labels"] = dict(self.unknown_labels.most_common())
        return out


class ImageResolver:
    """Maps a row to a ground-truth image id: by `image_id` when the ground truth has it, else by file name.

    The fallback exists because a run over a plain folder numbers images itself; the file name still ties the row
    to the annotation.
    """

    def __init__(self, images: Iterable[Mapping]):
        self.ids: set[int] = set()
        self.by_name: dict[str, int] = {}
        for img in images:
            self.ids.add(int(img["id"]))
            if img.get("file_name"):
                self.by_name[_base_name(str(img["file_name"]))] = int(img["id"])

    def __call__(self, row: Mapping) -> int | None:
        image_id = row.get("image_id")
        if image_id is not None and int(image_id) in self.ids:
            return int(image_id)
        path = row.get("path")
        return self.by_name.get(_base_name(str(path))) if path else None


def _base_name(path: str) -> str:
    return PurePosixPath(path.replace("\\", "/")).name


def object_to_result(obj: Mapping, image_id: int, category_id: int) -> dict:
    """One object -> one COCO result: {image_id, category_id, bbox [x, y, w, h], score[, segmentation]}."""
    x0, y0, x1, y1 = (float(v) for v in obj["box"])
    score = obj.get("score")
    result = {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "score": 1.0 if score is None else float(score),
    }
    mask = obj.get("mask")
    if mask is not None:
        counts = mask["counts"]
        result["segmentation"] = {
            "size": [int(v) for v in mask["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
        }
    return result


def rows_to_coco_results(
    rows: Iterable[Mapping],
    categories: Sequence[Mapping] | Mapping[str, int],
    resolve: ImageResolver | None = None,
    report: ConversionReport | None = None,
) -> tuple[list[dict], ConversionReport]:
    """COCO results for every object of every successful row, and a report of what was dropped.

    resolve: maps rows to ground-truth image ids (rows it cannot map are counted and skipped); None keeps each
    row's own `image_id`, as an export without ground truth does. report: counts to add to (streaming callers
    convert part by part into one report).
    """
    ids = category_ids(categories)
    report = report if report is not None else ConversionReport()
    results = []
    for row in rows:
        report.rows += 1
        if row.get("error"):
            report.error_rows += 1
            continue
        image_id = resolve(row) if resolve is not None else row.get("image_id")
        if image_id is None:
            report.unmatched_images += 1
            continue
        for obj in row.get("objects") or ():
            report.objects += 1
            category_id = ids.get(label_key(obj["label"]))
            if category_id is None:
                report.unknown_labels[obj["label"]] += 1
                continue
            result = object_to_result(obj, image_id, category_id)
            report.masks += "segmentation" in result
            results.append(result)
    report.results += len(results)
    return results, report


def result_area(result: Mapping) -> float:
    """The area a COCO dataset file gives an annotation: the mask's pixels when there is a mask, else w * h."""
    if "segmentation" in result and isinstance(result["segmentation"], Mapping):
        from pycocotools import mask as mask_utils

        rle = result["segmentation"]
        return float(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))
    return float(result["bbox"][2] * result["bbox"][3])


def box_polygon(bbox: Sequence[float]) -> list[list[float]]:
    """The box as a one-polygon segmentation, what pycocotools' loadRes gives a box-only result."""
    x, y, w, h = bbox
    return [[x, y, x, y + h, x + w, y + h, x + w, y]]


def image_entry(row: Mapping, file_name: str | None = None) -> dict:
    """A COCO `images` entry for a row's image."""
    return {
        "id": int(row["image_id"]),
        "file_name": file_name or row["path"],
        "width": int(row["width"]),
        "height": int(row["height"]),
    }


def annotation_entry(result: Mapping, ann_id: int) -> dict:
    """A COCO dataset annotation from a result: id, area, iscrowd 0, a segmentation (the box polygon when there is
    no mask, since COCO tools read one on every annotation), the model's score kept as an extra field."""
    ann = dict(result)
    ann["id"] = ann_id
    ann["area"] = result_area(result)
    ann["iscrowd"] = 0
    if "segmentation" not in ann:
        ann["segmentation"] = box_polygon(ann["bbox"])
    return ann


def dataset_categories(categories: Sequence[Mapping]) -> list[dict]:
    return [{"id": int(c["id"]), "name": str(c["name"]), "supercategory": "none"} for c in categories]


__all__ = [
    "ConversionReport",
    "ImageResolver",
    "ObjectRow",
    "Row",
    "annotation_entry",
    "box_polygon",
    "categories_for",
    "category_ids",
    "dataset_categories",
    "image_entry",
    "label_key",
    "object_to_result",
    "result_area",
    "rows_to_coco_results",
]
