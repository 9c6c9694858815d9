"""What every export reads: the rows (again and again: exports stream, they never hold a run in memory), each
image's rows together, the class list, the images' file names and files, and the object filter."""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from labeling.filters import ObjectFilter
from rows import PartStore, Row, category_ids, label_key
from rows.grouping import rows_by_image
from storage import Location


def _in_memory_groups(rows: Callable[[], Iterator[Row]]) -> Callable[[], Iterator[list[Row]]]:
    def groups() -> Iterator[list[Row]]:
        by_image: dict[int, list[Row]] = {}
        for row in rows():
            by_image.setdefault(row["image_id"], []).append(row)
        yield from by_image.values()

    return groups


@dataclass(frozen=True)
class ExportInput:
    """rows: a function that iterates every row from the start each time it is called; by_image: the same rows
    as lists of one image's rows each (default: grouped in memory, for small inputs; `from_store` groups a run's
    parts without holding them); categories: [{id, name}] of the classes to export (objects with another label
    are left out and counted); file_name: an image's name in the export (its source file name); read_image: row
    -> the image file's bytes (YOLO and VOC copy the images); model_version: what Label Studio shows as the
    predictions' model; document_root: Label Studio's LOCAL_FILES_DOCUMENT_ROOT for local images."""

    rows: Callable[[], Iterator[Row]]
    categories: list[dict]
    by_image: Callable[[], Iterator[list[Row]]] | None = None
    file_name: Callable[[Row], str] = lambda row: row["path"]
    read_image: Callable[[Row], bytes] | None = None
    model_version: str = ""
    object_filter: ObjectFilter = field(default_factory=ObjectFilter)
    document_root: str | None = None

    @classmethod
    def from_store(cls, store: PartStore, categories: list[dict], **options) -> ExportInput:
        """The export input of a run's committed parts."""
        return cls(rows=store.iter_rows, categories=categories, by_image=lambda: rows_by_image(store), **options)

    def class_index(self) -> dict[str, int]:
        """label_key -> position in `categories` (YOLO and Label Studio number classes from 0 in this order)."""
        return {label_key(c["name"]): i for i, c in enumerate(self.categories)}

    def category_ids(self) -> dict[str, int]:
        return category_ids(self.categories)

    def labeled_rows(self) -> Iterator[Row]:
        """Rows that succeeded, exactly one per image wherever its rows lie (the objects of an image's rows
        merged, e.g. --per-class), with the filter applied."""
        groups = self.by_image or _in_memory_groups(self.rows)
        for rows in groups():
            ok = [r for r in rows if not r.get("error")]
            if not ok:
                continue
            merged = dict(ok[0]) | {"objects": [o for r in ok for o in r["objects"] or ()]}
            if self.object_filter.active:
                merged["objects"] = self.object_filter(merged["objects"])
            yield merged  # type: ignore[misc]


class FlatNames:
    """File names without folders for exports that put every image in one folder (YOLO, VOC): a relative source
    name 'a/b/c.jpg' becomes 'a__b__c.jpg', an absolute path or URI its base name; a name already taken gets the
    image id in front, so two images never share a file."""

    def __init__(self):
        self.used: set[str] = set()

    def __call__(self, file_name: str, image_id: int) -> str:
        name = file_name.split("#", 1)[0].replace("\\", "/")
        if "://" in name or name.startswith("/"):
            name = posixpath.basename(name)
        name = "__".join(p for p in name.split("/") if p not in ("", ".", ".."))
        stem, ext = posixpath.splitext(name)
        name = f"{stem or image_id}{ext or '.png'}"
        if name in self.used:
            name = f"{image_id}-{name}"
        self.used.add(name)
        return name


def object_arrays(row: Row, classes: dict[str, int], with_masks: bool):
    """(xyxy float[N, 4], class_id int[N], confidence float[N], masks bool[N, H, W] or None, labels) of a row's
    objects whose label is one of `classes`; the count of objects left out."""
    from decoders import rle_to_mask

    kept = [o for o in row["objects"] if label_key(o["label"]) in classes]
    n = len(kept)
    xyxy = np.array([o["box"] for o in kept], dtype=np.float32).reshape(n, 4)
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, row["width"])
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, row["height"])
    class_id = np.array([classes[label_key(o["label"])] for o in kept], dtype=int)
    confidence = np.array([1.0 if o["score"] is None else o["score"] for o in kept], dtype=np.float32)
    masks = None
    if with_masks and any(o["mask"] is not None for o in kept):
        masks = np.zeros((n, row["height"], row["width"]), dtype=bool)
        for i, o in enumerate(kept):
            if o["mask"] is not None:
                masks[i] = rle_to_mask(o["mask"])
    return xyxy, class_id, confidence, masks, len(row["objects"]) - n


class LocalStage:
    """A local folder to write into: the output itself when it is local, a temporary folder uploaded to the
    output location when it is a URI (supervision's writers work on local paths)."""

    def __init__(self, out: Location):
        self.out = out
        self.path = out.path if out.local else tempfile.mkdtemp(prefix="export-")
        os.makedirs(self.path, exist_ok=True)

    def upload(self) -> None:
        if self.out.local:
            return
        for folder, _, files in os.walk(self.path):
            for name in files:
                local = os.path.join(folder, name)
                rel = os.path.relpath(local, self.path).replace(os.sep, "/")
                with open(local, "rb") as f:
                    self.out.join(*rel.split("/")).write_bytes(f.read())
        shutil.rmtree(self.path, ignore_errors=True)


def write_in_chunks(job: ExportInput, stage: LocalStage, save, chunk_size: int = 256) -> dict:
    """Feed `save(dataset)` supervision DetectionDatasets of at most chunk_size images each (their files copied
    into stage/.sources under unique flat names first), so that memory stays flat however many rows there are.
    Returns counts of images, objects and objects left out (a label outside the classes)."""
    import supervision as sv

    if job.read_image is None:
        raise ValueError("this export copies the images: the ExportInput needs read_image")
    sources = os.path.join(stage.path, ".sources")
    os.makedirs(sources, exist_ok=True)
    classes = job.class_index()
    names = [c["name"] for c in job.categories]
    flat_name = FlatNames()
    counts = {"images": 0, "objects": 0, "left_out": 0}
    chunk: dict[str, sv.Detections] = {}

    def flush():
        if chunk:
            save(sv.DetectionDataset(classes=names, images=list(chunk), annotations=dict(chunk)))
            for path in chunk:
                os.unlink(path)
            chunk.clear()

    for row in job.labeled_rows():
        local = os.path.join(sources, flat_name(job.file_name(row), row["image_id"]))
        with open(local, "wb") as f:
            f.write(job.read_image(row))
        xyxy, class_id, confidence, masks, left_out = object_arrays(row, classes, with_masks=True)
        chunk[local] = sv.Detections(xyxy=xyxy, class_id=class_id, confidence=confidence, mask=masks)
        counts["images"] += 1
        counts["objects"] += len(xyxy)
        counts["left_out"] += left_out
        if len(chunk) >= chunk_size:
            flush()
    flush()
    os.rmdir(sources)
    return counts
