"""Label Studio JSON exports: the reviewed annotations of each task, as objects.

A task's **annotations** are what a person made or accepted; its **predictions** are what the model proposed
(`jobs.export --format labelstudio`). Only annotations count here: the latest one that was not cancelled
(Label Studio marks a skipped task's annotation `was_cancelled`); a task without one is left out and counted
("task not reviewed" / "task skipped"), so a half-reviewed project gives records of the reviewed half only.

Regions: `rectanglelabels` (x, y, width, height in percent of the image, rotated about the top-left corner by
`rotation` degrees: the box is the rotated rectangle's bounds), `polygonlabels` (points in percent) and
`brushlabels` (Label Studio's own RLE of an RGBA image, decoded by label-studio-sdk's converter: the alpha
channel is the mask). `jobs.export` writes each object as a rectangle `ID` and a brush `ID-mask`, and Label
Studio keeps region ids through edits, so those two are one object however far the reviewer moved the box;
otherwise a mask and a rectangle of the same label whose boxes overlap (IoU >= 0.5) are one object, and any
other region is an object of its own. A paired object's box is the rectangle (what the reviewer framed).

Images: `/data/local-files/?d=REL` is DOCUMENT_ROOT/REL (Label Studio's LOCAL_FILES_DOCUMENT_ROOT, the root that
`jobs.export --document-root` wrote the paths against); a URI (s3://, gs://, ...) is read as a URI; an uploaded
file (`/data/upload/...`) lives inside Label Studio's own storage and is counted as a missing image.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from records.base import Item, Obj, Problems, clip_box, mask_box, polygon_mask
from storage import is_uri

REGION_TYPES = ("rectanglelabels", "polygonlabels", "brushlabels")
SAME_OBJECT_IOU = 0.5


def labelstudio_items(export: str | Path, document_root: str | None, problems: Problems) -> list[Item]:
    path = Path(export)
    tasks = json.loads(path.read_text())
    if isinstance(tasks, dict):  # one task exported alone
        tasks = [tasks]
    items = []
    for n, task in enumerate(tasks):
        where = f"{path.name} task {task.get('id', n)}"
        annotation = reviewed_annotation(task, problems, where)
        if annotation is None:
            continue
        image = image_path(str(task.get("data", {}).get("image", "")), document_root, problems, where)
        if image is None:
            continue
        item = _item(task, annotation, image, problems, where)
        if item is not None:
            items.append(item)
    return items


def reviewed_annotation(task: dict, problems: Problems, where: str) -> dict | None:
    """The task's latest annotation that was not cancelled, or None (counted)."""
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not annotations:
        problems.add("task skipped" if task.get("annotations") else "task not reviewed", where)
        return None
    return max(annotations, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def image_path(url: str, document_root: str | None, problems: Problems, where: str) -> str | None:
    """Where the task's image is: a local path under the document root, or a URI."""
    if is_uri(url):
        return url
    parsed = urlparse(url)
    if parsed.path.rstrip("/").endswith("/data/local-files"):
        rel = unquote(parse_qs(parsed.query).get("d", [""])[0])
        if not document_root and not os.path.isabs(rel):
            problems.add("local-files image without --document-root", where)
            return None
        path = rel if os.path.isabs(rel) else os.path.join(document_root or "", rel)
    elif url.startswith("/data/upload"):
        problems.add("missing image (uploaded into Label Studio; use local files or cloud storage)", where)
        return None
    else:
        path = url
    if not os.path.isfile(path):
        problems.add("missing image", where)
        return None
    return path


def _size(task: dict, annotation: dict, image: str) -> tuple[int, int] | None:
    for r in annotation.get("result") or []:
        if r.get("original_width") and r.get("original_height"):
            return int(r["original_width"]), int(r["original_height"])
    from records.base import image_size

    return image_size(image)


def _item(task: dict, annotation: dict, image: str, problems: Problems, where: str) -> Item | None:
    size = _size(task, annotation, image)
    if size is None:
        problems.add("missing image", where)
        return None
    w, h = size
    boxes: list[tuple[str, Obj]] = []
    masks: list[tuple[str, Obj]] = []
    for region in annotation.get("result") or []:
        kind = region.get("type")
        if kind not in REGION_TYPES:
            continue  # choices, text areas and relations carry no object
        obj = _region(region, kind, w, h, problems, where)
        if obj is not None:
            (masks if obj.mask is not None else boxes).append((str(region.get("id", "")), obj))
    objects = [m for _, m in masks]
    unpaired = list(masks)
    for rid, box in boxes:
        twin = next((m for mid, m in unpaired if rid and mid == f"{rid}-mask"), None) or next(
            (m for _, m in unpaired if m.label == box.label and _iou(m.box, box.box) >= SAME_OBJECT_IOU), None
        )
        if twin is None:
            objects.append(box)
        else:  # the reviewed rectangle is the object's box; the mask keeps its shape
            objects[next(i for i, o in enumerate(objects) if o is twin)] = Obj(twin.label, box.box, twin.mask)
            unpaired = [(mid, m) for mid, m in unpaired if m is not twin]
    image_id = task.get("data", {}).get("image_id", task.get("id"))
    return Item(image, w, h, tuple(objects), int(image_id) if image_id is not None else None)


def _region(region: dict, kind: str, w: int, h: int, problems: Problems, where: str) -> Obj | None:
    value = region.get("value") or {}
    labels = value.get(kind) or []
    if len(labels) != 1:
        problems.add("region without exactly one label", where)
        return None
    label = str(labels[0])
    if kind == "rectanglelabels":
        box = _rotated_bounds(value, w, h)
        if box is None:
            problems.add("rectangle without x, y, width, height", where)
            return None
        box = clip_box(box, w, h, problems, where)
        return None if box is None else Obj(label, box)
    if kind == "polygonlabels":
        points = value.get("points") or []
        if len(points) < 3:
            problems.add("polygon with fewer than 3 points", where)
            return None
        mask = polygon_mask([[c for x, y in points for c in (x * w / 100.0, y * h / 100.0)]], w, h)
    else:
        mask = brush_mask(value, w, h, problems, where)
        if mask is None:
            return None
    box = mask_box(mask)
    if box is None:
        problems.add("empty mask", where)
        return None
    return Obj(label, box, mask)


def brush_mask(value: dict, w: int, h: int, problems: Problems, where: str) -> np.ndarray | None:
    """Label Studio's brush RLE -> bool[H, W], through label-studio-sdk's own decoder."""
    from label_studio_sdk.converter.brush import decode_rle

    if value.get("format", "rle") != "rle" or not value.get("rle"):
        problems.add("brush region without RLE", where)
        return None
    flat = decode_rle(value["rle"])
    if flat.size != w * h * 4:
        problems.add("brush mask size differs from the image", where)
        return None
    return flat.reshape(h, w, 4)[:, :, 3] > 127


def _rotated_bounds(value: dict, w: int, h: int) -> tuple[float, float, float, float] | None:
    try:
        x, y = float(value["x"]) * w / 100.0, float(value["y"]) * h / 100.0
        bw, bh = float(value["width"]) * w / 100.0, float(value["height"]) * h / 100.0
    except (KeyError, TypeError, ValueError):
        return None
    angle = math.radians(float(value.get("rotation") or 0.0))
    if not angle:
        return (x, y, x + bw, y + bh)
    c, s = math.cos(angle), math.sin(angle)
    corners = [(x + dx * c - dy * s, y + dx * s + dy * c) for dx, dy in ((0, 0), (bw, 0), (0, bh), (bw, bh))]
    xs, ys = zip(*corners, strict=True)
    return (min(xs), min(ys), max(xs), max(ys))


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
