"""Each kind of source writes a record of itself into the output folder and reads it back as the same source,
which is what `jobs.export` uses long after the run; and reads back the images of an export in one pass."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sources import ParquetSource, TableSource, coco_source, folder_source, manifest_source, read_record
from storage import locate


def same_source(a, b) -> None:
    assert type(a) is type(b) and a.kind == b.kind and a.categories == b.categories
    if isinstance(a, TableSource):
        assert a.items.equals(b.items)
    else:
        assert (a.location, a.image_column, a.columns) == (b.location, b.image_column, b.columns)


def build(kind: str, tmp_path, photo_paths):
    import pandas as pd

    folder = tmp_path / "images"
    folder.mkdir()
    for p in photo_paths:
        (folder / p.name).write_bytes(p.read_bytes())
    if kind == "folder":
        return folder_source(folder)
    if kind == "coco":
        ann = tmp_path / "ann.json"
        images = [{"id": 10 + i, "file_name": p.name} for i, p in enumerate(photo_paths)]
        ann.write_text(json.dumps({"images": images, "categories": [{"id": 7, "name": "cat"}]}))
        return coco_source(ann, folder)
    if kind == "manifest":
        pd.DataFrame({"path": [p.name for p in photo_paths], "prompt": ["ocr", None, "caption en", None]}).to_csv(
            folder / "m.csv", index=False
        )
        return manifest_source(folder / "m.csv")
    struct = [{"bytes": p.read_bytes(), "path": p.name} for p in photo_paths]
    pq.write_table(pa.table({"image": struct}), tmp_path / "hf.parquet")
    return ParquetSource(str(tmp_path / "hf.parquet"), "image", ("image",))


@pytest.mark.parametrize("kind", ["folder", "coco", "manifest", "parquet"])
def test_a_source_record_reads_back_as_the_same_source(kind, tmp_path, photo_paths):
    source = build(kind, tmp_path, photo_paths)
    out = locate(tmp_path / "out")
    out.mkdir()
    source.write_record(out)
    again = read_record(out)
    same_source(source, again)
    row = {"image_id": 0, "path": "/elsewhere/x.png"}
    plan = source.plan(["ocr"], np.empty(0, np.int64), None)
    first = plan.inputs(plan.expected[:1])[0]
    assert again.file_names()(first) == source.file_names()(first)
    assert again.file_names()(row) == "/elsewhere/x.png"  # an image the source does not know keeps its path


def test_an_output_without_a_record_reads_as_a_folder_named_by_paths(tmp_path):
    source = read_record(locate(tmp_path))
    assert isinstance(source, TableSource) and source.file_names()({"image_id": 3, "path": "/a/b.png"}) == "/a/b.png"


def test_parquet_images_are_read_back_in_one_pass_and_cleaned_up(tmp_path, photo_paths, monkeypatch):
    source = build("parquet", tmp_path, photo_paths)
    plan = source.plan(["ocr"], np.empty(0, np.int64), None)
    rows = plan.inputs(plan.expected)
    scans = []
    original = ParquetSource._dataset
    monkeypatch.setattr(ParquetSource, "_dataset", lambda self: scans.append(1) or original(self))
    wanted = [r for r in rows if r["path"] != photo_paths[0].name]
    with source.images(np.array([r["image_id"] for r in wanted])) as read:
        for r in wanted:
            assert read(r) == r["bytes"]
        folder = read.folder
    assert len(scans) == 1 and not (folder and __import__("os").path.exists(folder))
