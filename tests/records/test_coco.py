"""COCO -> records -> the parser (and the bundled VAE): boxes within one <loc> bin, masks at IoU >= 0.9, and every
kind of bad input counted instead of crashing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from decoders import MaskDecoder, rle_to_mask
from jobs.make_records import main as make_records
from training.shapes_dataset import write_benchmark_set

from .helpers import VAE, decoded, gt_objects, iou, one_bin, read_jsonl


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory):
    """A shapes set rewritten as the COCO files people have: category ids with gaps, one object as a polygon, one
    as uncompressed RLE, a crowd region, an image without objects, and five bad annotations."""
    folder = tmp_path_factory.mktemp("coco")
    write_benchmark_set(folder, 10, 0, seed=3)
    data = json.loads((folder / "annotations.json").read_text())
    gaps = {1: 3, 2: 7, 3: 20}  # circle 3, square 7, triangle 20
    data["categories"] = [c | {"id": gaps[c["id"]]} for c in data["categories"]]
    for a in data["annotations"]:
        a["category_id"] = gaps[a["category_id"]]
    square = next(a for a in data["annotations"] if a["category_id"] == 7)
    x, y, w, h = square["bbox"]
    square["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]  # the square's own outline
    other = next(a for a in data["annotations"] if a is not square)
    m = rle_to_mask(other["segmentation"])
    flat = np.asfortranarray(m.astype(np.uint8)).reshape(-1, order="F")
    runs, value, count = [], 0, 0
    for v in flat:  # uncompressed RLE: alternating run lengths, starting with zeros
        if v != value:
            runs.append(count)
            value, count = v, 0
        count += 1
    runs.append(count)
    other["segmentation"] = {"size": [224, 224], "counts": [int(r) for r in runs]}
    next_id = max(a["id"] for a in data["annotations"]) + 1
    valid = {a["id"] for a in data["annotations"]}
    bad = [
        {"image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 30], "iscrowd": 1,
         "segmentation": mask_utils.encode(np.asfortranarray(np.ones((224, 224), np.uint8)))},
        {"image_id": 2, "category_id": 99, "bbox": [10, 10, 20, 20]},  # unknown category id
        {"image_id": 2, "category_id": 3, "bbox": [1, 1, 9, 9], "segmentation": [[1, 1, 5, 5]]},  # 2 points
        {"image_id": 3, "category_id": 7, "bbox": [200, 200, 60, 60]},  # past the right and bottom edges
    ]  # fmt: skip
    for i, a in enumerate(bad):
        if "counts" in a.get("segmentation", {}):
            a["segmentation"]["counts"] = a["segmentation"]["counts"].decode("ascii")
        data["annotations"].append(a | {"id": next_id + i})
    data["images"].append({"id": 500, "file_name": "images/empty.png", "width": 224, "height": 224})
    shutil.copyfile(folder / "images" / "00000.png", folder / "images" / "empty.png")  # no annotation: negative
    data["images"].append({"id": 501, "file_name": "images/gone.png", "width": 224, "height": 224})
    data["annotations"].append({"id": next_id + 9, "image_id": 501, "category_id": 3, "bbox": [5, 5, 20, 20]})
    (folder / "annotations.json").write_text(json.dumps(data))
    return folder, data, valid


def test_coco_segment_records_read_back_within_a_bin_and_masks_at_iou_09(coco_set, tmp_path, capsys):
    folder, data, valid = coco_set
    out = tmp_path / "records.jsonl"
    assert make_records(["--coco", str(folder / "annotations.json"), "--task", "segment", "--vae", str(VAE),
                         "--output", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    # Each kind of bad input has its own line; the missing image's record is not written.
    for line in ("crowd region left out: 1", "unknown category id: 1", "polygon with fewer than 3 points: 1",
                 "box outside the image: 1", "missing image: 1"):  # fmt: skip
        assert f"left out: {line}" in printed
    records = read_jsonl(out)
    assert "gone.png" not in out.read_text()
    assert {r["prefix"] for r in records} == {"segment circle ; square ; triangle"}  # COCO's category order
    by_image = {"images/" + r["image"].rsplit("/", 1)[-1]: r for r in records}  # paths relative to the records
    assert (out.parent / records[0]["image"]).is_file()
    assert by_image["images/empty.png"]["suffix"] == ""
    decoder = MaskDecoder.from_npz(VAE)
    ious = []
    for im in data["images"][:10]:
        record = by_image[im["file_name"]]
        got, want = decoded(record, decoder), gt_objects(data, im["id"], valid)
        assert sorted(g[0] for g in got) == sorted(w[0] for w in want)
        for label, box, mask in got:
            match = min((w for w in want if w[0] == label), key=lambda w: np.abs(w[1] - box).max())
            assert np.all(np.abs(match[1] - box) <= one_bin(224, 224) / 2 + 1e-6), (box, match[1])
            source = match[2] if match[2] is not None else _from_coco(data, im["id"], label, match[1])
            ious.append(iou(mask, source))
    assert len(ious) >= 15 and np.mean(ious) >= 0.9, np.mean(ious)


def _from_coco(data, image_id, label, box):
    """The source mask of an object stored as a polygon or uncompressed RLE."""
    from records import Problems
    from records.coco import coco_mask

    names = {c["id"]: c["name"] for c in data["categories"]}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        if (
            a["image_id"] == image_id
            and names.get(a["category_id"]) == label
            and np.allclose([x, y, x + w, y + h], box)
        ):
            return coco_mask(a["segmentation"], 224, 224, Problems(), "")
    raise AssertionError("no source object")


def test_missing_images_are_counted_and_the_split_is_by_image(coco_set, tmp_path, capsys):
    folder, _, _ = coco_set
    out = tmp_path / "train.jsonl"
    assert make_records(["--coco", str(folder / "annotations.json"), "--per-class", "--negative-share", "1",
                         "--val-share", "0.3", "--seed", "1", "--output", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    train, val = read_jsonl(out), read_jsonl(tmp_path / "train.val.jsonl")
    assert train and val and not {r["image"] for r in train} & {r["image"] for r in val}
    # Per-class prompts, with every absent class asked once (negative share 1): three prompts per image.
    assert all(r["prefix"].count(";") == 0 for r in train + val)
    images = {r["image"].rsplit("/", 1)[-1] for r in train + val}
    assert all(sum(r["image"].endswith("/" + i) for r in train + val) == 3 for i in images)
    assert "left out: missing image: 1" in printed and "gone.png" not in images


def test_bad_arguments_end_with_one_line_and_status_2(tmp_path, capsys):
    assert make_records(["--coco", str(tmp_path / "none.json"), "--output", str(tmp_path / "r.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert make_records(["--coco", str(tmp_path / "bad.json"), "--output", str(tmp_path / "r.jsonl")]) == 2
    assert "cannot read it" in capsys.readouterr().err
    assert make_records(["--coco", str(tmp_path / "bad.json"), "--task", "segment", "--output",
                         str(tmp_path / "r.jsonl")]) == 2  # fmt: skip
    assert "--vae" in capsys.readouterr().err
