"""Where inputs come from, one class per kind of source (sources/base.py says what each can do):

    table.py     TableSource: listed before the run (listing.py: an image folder, a COCO file's images, a manifest)
    parquet.py   ParquetSource: a Parquet dataset whose rows carry the image bytes, read by Ray in its own tasks

`open_source(spec)` makes the source a job's SourceSpec names; `read_record(folder)` rebuilds the source of an
earlier run from the record the run wrote (what `jobs.export` needs: file names, categories, image bytes).
"""

from __future__ import annotations

import json

from sources.base import IMAGE_EXTENSIONS, RECORD, ImageReader, Plan, Source, SourceError, stable_image_id
from sources.listing import coco_source, folder_source, manifest_source, parquet_source
from sources.parquet import ParquetSource
from sources.table import ITEM_SCHEMA, TableSource
from storage import Location

KINDS: dict[str, type] = {"folder": TableSource, "coco": TableSource, "manifest": TableSource,
                          "parquet": ParquetSource}  # fmt: skip


def open_source(spec) -> Source:
    """The source of a specs.SourceSpec (which has checked that exactly one kind is given)."""
    if spec.coco:
        return coco_source(spec.coco, spec.images)
    if spec.manifest:
        return manifest_source(spec.manifest)
    if spec.parquet:
        return parquet_source(spec.parquet, spec.image_column)
    return folder_source(spec.images)


def read_record(folder: Location) -> Source:
    """The source an output folder's record describes; an empty folder listing when there is no record (runs
    written before records existed), so that exports name images by their paths."""
    loc = folder.join(RECORD)
    record = json.loads(loc.read_text()) if loc.is_file() else {"kind": "folder"}
    return KINDS[record.get("kind", "folder")].from_record(record, folder)


__all__ = [
    "IMAGE_EXTENSIONS",
    "ITEM_SCHEMA",
    "ImageReader",
    "ParquetSource",
    "Plan",
    "Source",
    "SourceError",
    "TableSource",
    "coco_source",
    "folder_source",
    "manifest_source",
    "open_source",
    "parquet_source",
    "read_record",
    "stable_image_id",
]
