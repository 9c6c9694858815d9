"""The shapes benchmark's scores: perfect rows score 1 everywhere, and each kind of mistake costs its own score."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from evals.refseg import to_mask
from evals.shapes import headline, shapes_scores
from training.shapes_dataset import write_benchmark_set


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    write_benchmark_set(folder, num_scenes=6, num_words=3, seed=21)
    gt = json.loads((folder / "annotations.json").read_text())
    manifest = pd.read_parquet(folder / "manifest.parquet").to_dict("records")
    return folder, gt, manifest


def _perfect_rows(gt: dict, manifest: list[dict]) -> list[dict]:
    names = {c["id"]: c["name"] for c in gt["categories"]}
    rows = []
    for m in manifest:
        anns = [a for a in gt["annotations"] if a["image_id"] == m["image_id"]]
        objects = []
        if m["prompt"].startswith(("detect", "segment")):
            wanted = m["prompt"].split(" ", 1)[1].split(" ; ")
            for a in anns:
                if names[a["category_id"]] in wanted:
                    x, y, w, h = a["bbox"]
                    mask = a["segmentation"] if m["prompt"].startswith("segment") else None
                    objects.append(
                        {"label": names[a["category_id"]], "box": [x, y, x + w, y + h], "score": 0.9, "mask": mask}
                    )
        text = m["answer"] + "<eos>" if not objects else "..."
        rows.append({"image_id": m["image_id"], "prompt": m["prompt"], "text": text, "objects": objects, "error": None})
    return rows


def test_perfect_rows_score_one(shapes_set):
    folder, gt, manifest = shapes_set
    scores = shapes_scores(_perfect_rows(gt, manifest), manifest, folder / "annotations.json")
    assert all(v == pytest.approx(1.0) for v in headline(scores).values()), headline(scores)
    assert scores["segmentation"]["coco_segm"]["AP50"] == pytest.approx(1.0)


def test_each_mistake_costs_its_own_score(shapes_set):
    folder, gt, manifest = shapes_set
    rows = _perfect_rows(gt, manifest)
    ocr = next(r for r in rows if r["prompt"] == "ocr")
    ocr["text"] = "WRONG"
    seg = next(r for r in rows if r["prompt"].startswith("segment"))
    seg["objects"] = []  # no mask: IoU 0
    det = next(r for r in rows if r["prompt"].startswith("detect"))
    det["objects"] = [dict(o, box=[0, 0, 5, 5]) for o in det["objects"]]
    cap = next(r for r in rows if r["prompt"] == "caption en")
    cap["error"] = "cannot read image"
    top = headline(shapes_scores(rows, manifest, folder / "annotations.json"))
    assert top["OCR exact match"] == pytest.approx(2 / 3)
    assert top["caption exact match"] == pytest.approx(5 / 6)
    assert top["counting accuracy"] == pytest.approx(1.0)
    assert 0 < top["detection AP50"] < 1 and 0 < top["segmentation mIoU"] < 1
    n_seg = sum(m["prompt"].startswith("segment") for m in manifest)
    assert top["segmentation mIoU"] == pytest.approx((n_seg - 1) / n_seg)


def test_ground_truth_masks_decode_to_the_image_size(shapes_set):
    _, gt, _ = shapes_set
    assert to_mask(gt["annotations"][0]["segmentation"]).shape == (224, 224)
