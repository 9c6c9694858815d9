"""YOLO and VOC datasets, as this toolkit's exports write them (supervision's writers), back into records: boxes
within one <loc> bin, polygons back to masks at IoU >= 0.9, and bad lines counted."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from exports import voc, yolo
from exports.base import ExportInput
from jobs.make_records import main as make_records
from records import Problems
from records.yolo import yolo_items
from rows import categories_for
from storage import locate
from training.shapes import CLASSES

from .helpers import VAE, decoded, iou, one_bin, read_jsonl, scene_rows


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Eight shapes scenes as label rows (ground-truth boxes and masks), with their images on disk."""
    rows, truth = scene_rows(tmp_path_factory.mktemp("scenes"), seed=5, count=8, score=0.9, model="truth")
    job = ExportInput(rows=lambda: iter(json.loads(json.dumps(rows))), categories=categories_for(list(CLASSES)))
    return job, truth


def _read(row) -> bytes:
    with open(row["path"], "rb") as f:
        return f.read()


def _exported_records(job: ExportInput, tmp_path, fmt: str, *options: str) -> list[dict]:
    """The scenes exported as YOLO or VOC, then read back by make_records with `options`."""
    out = tmp_path / fmt
    (yolo if fmt == "yolo" else voc).write(dataclasses.replace(job, read_image=_read), locate(str(out)))
    source = ["--yolo", str(out / "data.yaml")] if fmt == "yolo" else ["--voc", str(out)]
    records_path = tmp_path / "records.jsonl"
    assert make_records([*source, *options, "--output", str(records_path)]) == 0
    return read_jsonl(records_path)


def _check(records: list[dict], truth: dict, decoder=None, box_tolerance_px: float = 0.0) -> list[float]:
    """Every record's objects against its scene's shapes; returns the mask IoUs."""
    ious = []
    assert len(records) == len(truth)
    for r in records:
        stem = r["image"].rsplit("/", 1)[-1].removesuffix(".png").split("__")[-1]
        shapes = truth[stem]
        got = decoded(r, decoder)
        assert sorted(g[0] for g in got) == sorted(s.kind for s in shapes), r["image"]
        for label, box, mask in got:
            s = min((s for s in shapes if s.kind == label), key=lambda s: np.abs(np.array(s.box) - box).max())
            assert np.all(np.abs(np.array(s.box) - box) <= one_bin(224, 224) + box_tolerance_px), (box, s.box)
            if mask is not None:
                ious.append(iou(mask, s.mask))
    return ious


@pytest.mark.parametrize("fmt", ["yolo", "voc"])
def test_boxes_come_back_within_a_bin(scenes, tmp_path, fmt):
    job, truth = scenes
    records = _exported_records(job, tmp_path, fmt, "--task", "detect")
    # YOLO keeps the class list's order; VOC has no class list, so classes come in the order first seen.
    [prefix] = {r["prefix"] for r in records}
    if fmt == "yolo":
        assert prefix == "detect circle ; square ; triangle"
    assert sorted(prefix.removeprefix("detect ").split(" ; ")) == ["circle", "square", "triangle"]
    # YOLO writes masks as polygons, so its boxes are the polygons' bounds: a pixel of tracing either way.
    _check(records, truth, box_tolerance_px=1.0 if fmt == "yolo" else 0.0)


@pytest.mark.parametrize("fmt", ["yolo", "voc"])
def test_polygons_come_back_as_masks(scenes, tmp_path, fmt):
    from decoders import MaskDecoder

    job, truth = scenes
    records = _exported_records(job, tmp_path, fmt, "--task", "segment", "--vae", str(VAE))
    ious = _check(records, truth, MaskDecoder.from_npz(VAE), box_tolerance_px=1.0)
    assert len(ious) >= 12 and np.mean(ious) >= 0.9, np.mean(ious)


def test_bad_yolo_lines_are_counted_one_kind_per_line(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (100, 50)).save(tmp_path / "images" / "a.png")
    (tmp_path / "labels" / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n"  # fine
        "7 0.5 0.5 0.2 0.2\n"  # unknown class id
        "1 0.1 0.1 0.2\n"  # one point (and a trailing number): not a polygon
        "0 1.5 0.5 0.2 0.2\n"  # past the right edge
        "x y z\n"  # not numbers
    )
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\n")
    problems = Problems()
    [item] = yolo_items(tmp_path / "data.yaml", problems)
    assert [(o.label, o.box) for o in item.objects] == [("cat", (40.0, 20.0, 60.0, 30.0))]
    assert dict(problems.counts) == {"unknown class id": 1, "polygon with fewer than 3 points": 1,
                                     "box outside the image": 1, "unreadable label line": 1}  # fmt: skip
