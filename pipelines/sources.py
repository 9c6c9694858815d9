"""Where inputs come from: an image folder, a COCO dataset, or a Parquet/CSV manifest.

Every source becomes a list of `Item`s (image id, path, prompt) built in the driver, before Ray starts any work, so
that a bad argument fails at once with a clear message and `--resume` can subtract what is already written.

Image ids are stable: a COCO file's own ids are kept; a folder's (and a manifest's without an `image_id` column)
are derived from the path relative to the folder, so the same file gets the same id on every run and machine,
whatever else is added to the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
)


class SourceError(ValueError):
    """A source that cannot be used: a missing folder, an unreadable manifest, duplicate ids. Exit status 2."""


@dataclass(frozen=True)
class Item:
    """One (image, prompt) to label. prompt None means the job's task prompt; file_name is what COCO files show."""

    image_id: int
    path: str
    file_name: str
    prompt: str | None = None


@dataclass(frozen=True)
class Source:
    items: list[Item]
    kind: str  # "folder", "coco" or "manifest"
    categories: tuple[dict, ...] = ()  # a COCO source's categories ({id, name}), kept for category ids


def stable_image_id(relative_path: str) -> int:
    """A positive id below 2**53 (exact in JSON readers that use doubles) from a POSIX relative path."""
    digest = hashlib.sha1(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (2**53 - 1) + 1


def folder_source(images: str | os.PathLike) -> Source:
    """Every image file under `images` (recursive, by extension, hidden files skipped), in sorted path order."""
    root = Path(images)
    if not root.is_dir():
        raise SourceError(f"--images {root}: not a folder")
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            items.append(Item(stable_image_id(rel), str(path.resolve()), rel))
    if not items:
        raise SourceError(f"--images {root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    _check_unique(items, f"--images {root}")
    return Source(items, "folder")


def coco_source(annotations: str | os.PathLike, images: str | os.PathLike) -> Source:
    """The images a COCO file lists (its ids kept), found under `images` by their file_name."""
    ann_path, root = Path(annotations), Path(images)
    try:
        data = json.loads(ann_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SourceError(f"--coco {ann_path}: cannot read a COCO JSON file ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise SourceError(f"--coco {ann_path}: expected a COCO dataset with an 'images' list")
    if not root.is_dir():
        raise SourceError(f"--images {root}: not a folder")
    items = []
    for image in data["images"]:
        try:
            image_id, file_name = int(image["id"]), str(image["file_name"])
        except (KeyError, TypeError, ValueError) as e:
            raise SourceError(
                f"--coco {ann_path}: an image entry lacks an integer 'id' or a 'file_name': {image}"
            ) from e
        items.append(Item(image_id, str((root / file_name).resolve()), file_name))
    if not items:
        raise SourceError(f"--coco {ann_path}: the 'images' list is empty")
    _check_unique(items, f"--coco {ann_path}")
    categories = tuple({"id": int(c["id"]), "name": str(c["name"])} for c in data.get("categories", []))
    return Source(items, "coco", categories)


def manifest_source(manifest: str | os.PathLike) -> Source:
    """A Parquet or CSV table with a `path` column and optional `prompt` and `image_id` columns.

    Relative paths are relative to the manifest's folder. Rows may repeat an image with different prompts; an
    (image_id, prompt) pair may appear once.
    """
    import pandas as pd

    path = Path(manifest)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            table = pd.read_parquet(path)
        elif path.suffix.lower() in (".csv", ".tsv"):
            table = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype={"path": str})
        else:
            raise SourceError(f"--manifest {path}: expected a .parquet or .csv file")
    except SourceError:
        raise
    except Exception as e:  # pandas and pyarrow raise many types for unreadable files
        raise SourceError(f"--manifest {path}: cannot read it ({e})") from e
    if "path" not in table.columns:
        raise SourceError(f"--manifest {path}: expected a 'path' column but got {', '.join(map(str, table.columns))}")
    items = []
    for i, row in enumerate(table.to_dict("records")):
        raw_path = row.get("path")
        if not isinstance(raw_path, str) or not raw_path:
            raise SourceError(f"--manifest {path}: row {i} has no path")
        full = Path(raw_path) if Path(raw_path).is_absolute() else path.parent / raw_path
        prompt = row.get("prompt")
        prompt = prompt if isinstance(prompt, str) and prompt.strip() else None
        image_id = row.get("image_id")
        if image_id is None or (isinstance(image_id, float) and image_id != image_id):  # missing or NaN
            image_id = stable_image_id(Path(raw_path).as_posix())
        items.append(Item(int(image_id), str(full.resolve()), raw_path, prompt))
    if not items:
        raise SourceError(f"--manifest {path}: no rows")
    seen: set[tuple[int, str | None]] = set()
    for item in items:
        key = (item.image_id, item.prompt)
        if key in seen:
            raise SourceError(f"--manifest {path}: image {item.image_id} ({item.path}) appears twice with one prompt")
        seen.add(key)
    return Source(items, "manifest")


def _check_unique(items: list[Item], where: str) -> None:
    ids: dict[int, str] = {}
    for item in items:
        if item.image_id in ids:
            raise SourceError(f"{where}: image id {item.image_id} is used by both {ids[item.image_id]} and {item.path}")
        ids[item.image_id] = item.path
