"""Exports read back by readers that are not ours (supervision, pycocotools, label-studio-sdk), and the filters."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from decoders import mask_to_rle
from exports import coco, labelstudio, voc, yolo  # noqa: F401
from exports.base import ExportInput
from labeling import ObjectFilter, parse_class_thresholds
from rows import categories_for
from storage import locate

W, H = 120, 90


def obj(label, box, score, mask=None):
    return {"label": label, "box": [float(v) for v in box], "score": score, "mask": mask}


def ellipse(box) -> np.ndarray:
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[:H, :W]
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1


@pytest.fixture
def labeled(tmp_path):
    """Two labeled images (one with a mask), one with nothing found, one that failed."""
    paths = []
    for i, color in enumerate(("red", "green", "blue", "white")):
        paths.append(tmp_path / "src" / f"img{i}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        Image.new("RGB", (W, H), color).save(paths[-1])
    cat_box, dog_box = (10, 20, 60, 70), (70, 5, 110, 45)
    rows = [
        {"image_id": 1, "path": str(paths[0]), "objects": [obj("cat", cat_box, 0.9, mask_to_rle(ellipse(cat_box))),
                                                           obj("Dog", dog_box, 0.7)]},
        {"image_id": 2, "path": str(paths[1]), "objects": [obj("dog", (5, 5, 50, 40), 0.8),
                                                           obj("zebra", (1, 1, 9, 9), 0.5)]},
        {"image_id": 3, "path": str(paths[2]), "objects": []},
        {"image_id": 4, "path": str(paths[3]), "objects": [], "error": "cannot decode image: broken"},
    ]  # fmt: skip
    full = [{"width": W, "height": H, "task": "segment", "prompt": "segment cat ; dog", "text": "", "error": None,
             "model": "m", "seconds": 0.1} | r for r in rows]  # fmt: skip
    return ExportInput(rows=lambda: iter(json.loads(json.dumps(full))), categories=categories_for(["cat", "dog"]),
                       model_version="shapes-test", read_image=read_image)  # fmt: skip


def read_image(row) -> bytes:
    with open(row["path"], "rb") as f:
        return f.read()


EXPECTED = {"img0": [[10, 20, 60, 70], [70, 5, 110, 45]], "img1": [[5, 5, 50, 40]], "img2": []}


def assert_boxes(pairs) -> None:
    """Every image's boxes equal the expected ones within a pixel."""
    got = {name: sorted(np.asarray(boxes, dtype=float).reshape(-1, 4).tolist()) for name, boxes in pairs}
    assert sorted(got) == sorted(EXPECTED)
    for name, boxes in got.items():
        assert len(boxes) == len(EXPECTED[name]) and np.abs(np.subtract(boxes, EXPECTED[name])).max(initial=0) <= 1


def test_coco_export_loads_in_pycocotools_with_the_same_boxes_and_mask(labeled, tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    counts = coco.write(labeled, locate(tmp_path / "coco"))
    assert counts["results"] == 3 and counts["unknown_labels"] == {"zebra": 1}
    gt = COCO(str(tmp_path / "coco" / "coco_dataset.json"))
    assert sorted(gt.getImgIds()) == [1, 2, 3]  # the failed image is not in the dataset
    boxes = {i: [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                 for a in gt.loadAnns(gt.getAnnIds(imgIds=[i]))] for i in (1, 2, 3)}  # fmt: skip
    assert_boxes((f"img{i - 1}", b) for i, b in boxes.items())
    (cat,) = gt.loadAnns(gt.getAnnIds(imgIds=[1], catIds=[1]))
    assert mask_iou(gt.annToMask(cat).astype(bool), ellipse((10, 20, 60, 70))) >= 0.99
    results = gt.loadRes(str(tmp_path / "coco" / "coco_results.json"))
    assert len(results.getAnnIds()) == 3 and mask_utils.area(cat["segmentation"]) == ellipse((10, 20, 60, 70)).sum()


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_yolo_export_reads_back_in_supervision(labeled, tmp_path):
    import supervision as sv

    counts = yolo.write(labeled, locate(tmp_path / "yolo"))
    assert counts == {"images": 3, "objects": 3, "left_out": 1}
    ds = sv.DetectionDataset.from_yolo(str(tmp_path / "yolo" / "images"), str(tmp_path / "yolo" / "labels"),
                                       str(tmp_path / "yolo" / "data.yaml"), force_masks=True)  # fmt: skip
    assert ds.classes == ["cat", "dog"]
    got = {path.rsplit("/", 1)[-1].split(".")[0]: dets for path, _, dets in ds}
    assert_boxes((k, d.xyxy) for k, d in got.items())
    cat = got["img0"][got["img0"].class_id == 0]
    assert mask_iou(cat.mask[0], ellipse((10, 20, 60, 70))) >= 0.9  # YOLO keeps a mask as a traced polygon


def test_voc_export_reads_back_in_supervision(labeled, tmp_path):
    import supervision as sv

    counts = voc.write(labeled, locate(tmp_path / "voc"))
    assert counts["images"] == 3 and counts["objects"] == 3
    ds = sv.DetectionDataset.from_pascal_voc(str(tmp_path / "voc" / "images"), str(tmp_path / "voc" / "annotations"))
    got = {path.rsplit("/", 1)[-1].split(".")[0]: dets for path, _, dets in ds}
    assert_boxes((k, d.xyxy) for k, d in got.items())
    assert sorted(np.array(ds.classes)[got["img1"].class_id]) == ["dog"]


def test_labelstudio_tasks_carry_percent_boxes_scores_and_brush_masks(labeled, tmp_path):
    from label_studio_sdk.converter.brush import decode_rle

    counts = labelstudio.write(dataclasses.replace(labeled, document_root=str(tmp_path)), locate(tmp_path / "ls"))
    assert counts["images"] == 3
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=src/img0.png"
    prediction = tasks[0]["predictions"][0]
    assert prediction["model_version"] == "shapes-test" and prediction["score"] == pytest.approx(0.8)
    rects = [r for r in prediction["result"] if r["type"] == "rectanglelabels"]
    cat = rects[0]["value"]
    assert (cat["x"], cat["y"], cat["width"], cat["height"]) == pytest.approx(
        (100 * 10 / W, 100 * 20 / H, 100 * 50 / W, 100 * 50 / H)
    )
    assert rects[0]["score"] == pytest.approx(0.9) and rects[1]["value"]["rectanglelabels"] == ["dog"]
    (brush,) = [r for r in prediction["result"] if r["type"] == "brushlabels"]
    decoded = decode_rle(brush["value"]["rle"]).reshape(H, W, 4)[:, :, 3] > 128
    assert mask_iou(decoded, ellipse((10, 20, 60, 70))) >= 0.99 and brush["value"]["brushlabels"] == ["cat"]
    config = (tmp_path / "ls" / "label_config.xml").read_text()
    assert 'name="label"' in config and 'name="mask"' in config and 'value="dog"' in config


# ---- filters ----------------------------------------------------------------------------------------------------


def test_nms_keeps_one_box_per_object_and_only_within_a_class_unless_asked():
    objects = [
        obj("cat", (10, 10, 50, 50), 0.9),
        obj("cat", (12, 11, 51, 52), 0.8),  # the same cat again (PaliGemma repeats objects)
        obj("cat", (11, 9, 49, 50), 0.6),
        obj("dog", (12, 12, 50, 50), 0.7),  # another class on the same spot
        obj("cat", (70, 70, 90, 90), 0.5),  # a second cat elsewhere
        obj("cat", (11, 10, 50, 50), None),  # no score: kept, never suppresses
    ]
    kept = ObjectFilter(nms_iou=0.5)(objects)
    assert [(o["label"], o["score"]) for o in kept] == [("cat", 0.9), ("dog", 0.7), ("cat", 0.5), ("cat", None)]
    agnostic = ObjectFilter(nms_iou=0.5, class_agnostic=True)(objects)
    assert [(o["label"], o["score"]) for o in agnostic] == [("cat", 0.9), ("cat", 0.5), ("cat", None)]


def test_per_class_thresholds_override_the_minimum_score():
    objects = [obj("cat", (0, 0, 1, 1), 0.5), obj("Dog", (0, 0, 1, 1), 0.5), obj("bird", (0, 0, 1, 1), 0.25)]
    f = ObjectFilter(min_score=0.3, class_thresholds=parse_class_thresholds("cat=0.4, dog=0.6"))
    assert [o["label"] for o in f(objects)] == ["cat"]  # dog under its 0.6, bird under the 0.3 minimum
    with pytest.raises(ValueError, match="NAME=SCORE"):
        parse_class_thresholds("cat:0.4")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ObjectFilter(class_thresholds={"cat": 1.5})


def test_exports_apply_the_filter(labeled, tmp_path):
    coco.write(dataclasses.replace(labeled, object_filter=ObjectFilter(min_score=0.75)), locate(tmp_path / "coco"))
    dataset = json.loads((tmp_path / "coco" / "coco_dataset.json").read_text())
    assert sorted(a["score"] for a in dataset["annotations"]) == [pytest.approx(0.8), pytest.approx(0.9)]
