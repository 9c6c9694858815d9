"""COCO instances files: boxes, polygons and RLE masks (compressed or not), by category name.

Crowd regions (`iscrowd: 1`) are left out and counted: they mark a crowd, not one object, and a detection
target that names a crowd as one box teaches the model to box crowds. Category ids may have gaps; an annotation
whose id is not among the categories is counted as "unknown category id". An image without annotations gives an
Item without objects (a negative example). Images are found as `IMAGES/file_name`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from records.base import Item, Obj, Problems, clip_box, mask_box, polygon_mask


def coco_items(
    annotations: str | Path, images: str | Path | None, problems: Problems, masks: bool = True
) -> list[Item]:
    """Every image of the file as an Item; `images` is the folder that `file_name`s are relative to (default:
    the annotation file's folder). masks: decode segmentations (False reads boxes only, faster)."""
    path = Path(annotations)
    data = json.loads(path.read_text())
    root = str(images) if images is not None else str(path.parent)
    names = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in data.get("annotations", []):
        by_image[int(ann["image_id"])].append(ann)
    items = []
    for im in data.get("images", []):
        image_id, w, h = int(im["id"]), int(im["width"]), int(im["height"])
        file = im["file_name"] if "://" in im["file_name"] else os.path.join(root, im["file_name"])
        if "://" not in file and not os.path.isfile(file):
            problems.add("missing image", file)
            continue
        objects = []
        for ann in by_image.get(image_id, []):
            obj = _object(ann, names, w, h, problems, masks, f"{path.name} annotation {ann.get('id')}")
            if obj is not None:
                objects.append(obj)
        items.append(Item(file, w, h, tuple(objects), image_id))
    return items


def _object(ann: dict, names: dict[int, str], w: int, h: int, problems: Problems, masks: bool, where: str):
    if ann.get("iscrowd"):
        problems.add("crowd region left out", where)
        return None
    if int(ann.get("category_id", -1)) not in names:
        problems.add("unknown category id", where)
        return None
    mask = None
    seg = ann.get("segmentation")
    if masks and seg:
        mask = coco_mask(seg, w, h, problems, where)
        if mask is None:
            return None
    if ann.get("bbox"):
        x, y, bw, bh = (float(v) for v in ann["bbox"])
        box = (x, y, x + bw, y + bh)
    elif mask is not None:
        box = mask_box(mask)
    else:
        problems.add("annotation without box or mask", where)
        return None
    if box is None:
        problems.add("empty mask", where)
        return None
    box = clip_box(box, w, h, problems, where)
    return None if box is None else Obj(names[int(ann["category_id"])], box, mask)


def coco_mask(seg, w: int, h: int, problems: Problems, where: str) -> np.ndarray | None:
    """A COCO segmentation (polygon list, RLE with string or list counts) -> bool[H, W], or None (counted)."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        polygons = [p for p in seg if len(p) >= 6]
        if len(polygons) < len(seg):
            problems.add("polygon with fewer than 3 points", where)
        if not polygons:
            return None
        return polygon_mask(polygons, w, h)
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if [int(v) for v in seg["size"]] != [h, w]:
            problems.add("mask size differs from the image", where)
            return None
        rle = seg
        if isinstance(seg["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, h, w)
        elif isinstance(seg["counts"], str):
            rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
        return mask_utils.decode(rle).astype(bool)
    problems.add("unreadable segmentation", where)
    return None
