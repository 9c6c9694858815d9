"""Pascal VOC: one XML file per image (`<object>` with `<name>`, `<bndbox>` and optionally `<polygon>`).

VOC counts pixels from 1 with inclusive corners, so a box xmin..xmax covers pixels xmin - 1 .. xmax - 1: here
(x0, y0, x1, y1) = (xmin - 1, ymin - 1, xmax, ymax), exactly what supervision's `as_pascal_voc` (our export)
writes; polygons are shifted by one the same way. Parsed with the standard library, not supervision's
`from_pascal_voc`, so that one bad object (a missing field, a box outside the image) is counted and skipped
instead of failing the dataset. The XML files are looked for under DIR/annotations (our export), DIR/Annotations
(VOC's own layout) or DIR itself; images under DIR/images, DIR/JPEGImages or beside the XML.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from records.base import Item, Obj, Problems, clip_box, image_size, polygon_mask


def voc_items(folder: str | Path, problems: Problems) -> list[Item]:
    folder = Path(folder)
    xml_dir = next((folder / n for n in ("annotations", "Annotations") if (folder / n).is_dir()), folder)
    image_dirs = [folder / n for n in ("images", "JPEGImages") if (folder / n).is_dir()] + [xml_dir]
    items = []
    for xml in sorted(xml_dir.glob("*.xml")):
        item = _item(xml, image_dirs, problems)
        if item is not None:
            items.append(item)
    return items


def _text(node, path: str) -> str | None:
    found = node.find(path)
    return None if found is None or found.text is None else found.text.strip()


def _item(xml: Path, image_dirs: list[Path], problems: Problems) -> Item | None:
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError:
        problems.add("unreadable XML", xml.name)
        return None
    name = _text(root, "filename") or xml.with_suffix(".png").name
    image = next((d / name for d in image_dirs if (d / name).is_file()), None)
    size = image_size(os.fspath(image)) if image is not None else None
    if size is None:
        problems.add("missing image", name)
        return None
    w, h = size
    objects = []
    for i, node in enumerate(root.iter("object")):
        obj = _object(node, w, h, problems, f"{xml.name} object {i}")
        if obj is not None:
            objects.append(obj)
    return Item(os.fspath(image), w, h, tuple(objects))


def _object(node, w: int, h: int, problems: Problems, where: str) -> Obj | None:
    label = _text(node, "name")
    try:
        xmin, ymin, xmax, ymax = (float(_text(node, f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
    except (TypeError, ValueError):
        problems.add("object without a readable box", where)
        return None
    if not label:
        problems.add("object without a name", where)
        return None
    box = clip_box((xmin - 1, ymin - 1, xmax, ymax), w, h, problems, where)
    if box is None:
        return None
    mask = None
    polygon = node.find("polygon")
    if polygon is not None:
        values = [float(c.text) - 1 for c in polygon if c.text is not None]
        if len(values) < 6 or len(values) % 2:
            problems.add("polygon with fewer than 3 points", where)
            return None
        mask = polygon_mask([values], w, h)
        if not mask.any():
            mask = None
    return Obj(label, box, np.asarray(mask) if mask is not None else None)
