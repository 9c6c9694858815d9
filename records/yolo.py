"""YOLO datasets: data.yaml (class names, image folders) and one labels/NAME.txt per image.

A line is `class cx cy w h` (a box) or `class x1 y1 x2 y2 ...` (a polygon, YOLO's segmentation format), all
normalized to the image. Read here line by line rather than through supervision's `from_yolo`, which raises on
the first malformed line: a dataset with one bad line should lose that line (counted), not the whole run.
Image folders: the yaml's `train`, `val` and `test` entries (folders or .txt lists, relative to its `path`, else
to the yaml's folder), or `images/` beside the yaml; labels sit in the sibling `labels/` folder (YOLO's rule:
the last `images` component of the path becomes `labels`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from records.base import Item, Obj, Problems, clip_box, image_size, mask_box, polygon_mask

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def yolo_items(
    data_yaml: str | Path, problems: Problems, splits: tuple[str, ...] = ("train", "val", "test")
) -> list[Item]:
    import yaml

    path = Path(data_yaml)
    data = yaml.safe_load(path.read_text()) or {}
    names = data.get("names", [])
    names = {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else dict(enumerate(map(str, names)))
    root = Path(data["path"]) if data.get("path") else path.parent
    root = root if root.is_absolute() else path.parent / root
    images: list[Path] = []
    for split in splits:
        for entry in _entries(data.get(split)):
            images.extend(_images(root / entry))
    if not any(data.get(s) for s in splits):
        images = _images(path.parent / "images")
    items = []
    for image in dict.fromkeys(images):  # one split listed twice reads once
        item = _item(image, names, problems)
        if item is not None:
            items.append(item)
    return items


def _entries(value) -> list[str]:
    return [] if not value else [value] if isinstance(value, str) else [str(v) for v in value]


def _images(entry: Path) -> list[Path]:
    if entry.suffix == ".txt" and entry.is_file():
        return [entry.parent / line.strip() for line in entry.read_text().splitlines() if line.strip()]
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return []


def label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _item(image: Path, names: dict[int, str], problems: Problems) -> Item | None:
    size = image_size(str(image))
    if size is None:
        problems.add("missing image", str(image))
        return None
    w, h = size
    labels = label_path(image)
    objects = []
    lines = labels.read_text().splitlines() if labels.is_file() else []
    for n, line in enumerate(lines, 1):
        if line.strip():
            obj = _object(line.split(), names, w, h, problems, f"{labels.name}:{n}")
            if obj is not None:
                objects.append(obj)
    return Item(os.fspath(image), w, h, tuple(objects))


def _object(values: list[str], names: dict[int, str], w: int, h: int, problems: Problems, where: str):
    try:
        cls, numbers = int(float(values[0])), [float(v) for v in values[1:]]
    except (ValueError, IndexError):
        problems.add("unreadable label line", where)
        return None
    if cls not in names:
        problems.add("unknown class id", where)
        return None
    if len(numbers) == 4:
        cx, cy, bw, bh = numbers
        box = clip_box(
            ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h), w, h, problems, where
        )
        return None if box is None else Obj(names[cls], box)
    if len(numbers) % 2:  # a polygon followed by a confidence or track id, as some tools write
        numbers = numbers[:-1]
    if len(numbers) < 6:
        problems.add("polygon with fewer than 3 points", where)
        return None
    points = np.asarray(numbers).reshape(-1, 2) * (w, h)
    mask = polygon_mask([points.reshape(-1).tolist()], w, h)
    box = mask_box(mask)
    box = None if box is None else clip_box(box, w, h, problems, where)
    if box is None:
        problems.add("empty polygon", where)
        return None
    return Obj(names[cls], box, mask)
