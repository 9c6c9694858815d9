"""training.large_scenes: counts, sizes, masks against boxes, determinism, and a set the shapes scores read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from decoders import rle_to_mask
from evals.shapes import shapes_scores
from labeling.tiles import MaskCrop
from training.large_scenes import GAP, draw_large_scene, write_large_benchmark_set
from training.shapes import CLASSES


@pytest.mark.parametrize("size", [896, 1792])
def test_scenes_hold_10_to_30_small_shapes_apart(size: int) -> None:
    rng = np.random.default_rng(3)
    for _ in range(4):
        image, shapes = draw_large_scene(rng, size)
        assert image.size == (size, size) and image.mode == "RGB"
        assert 10 <= len(shapes) <= 30
        for i, s in enumerate(shapes):
            x0, y0, x1, y1 = s.box
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            assert 20 <= x1 - x0 <= 60 and 20 <= y1 - y0 <= 60
            assert s.kind in CLASSES
            for t in shapes[i + 1 :]:  # no two boxes closer than GAP pixels
                apart_x = max(t.box[0] - x1, x0 - t.box[2])
                apart_y = max(t.box[1] - y1, y0 - t.box[3])
                assert max(apart_x, apart_y) >= GAP


def test_a_mask_fills_its_box_to_every_edge_and_is_drawn_in_the_image() -> None:
    image, shapes = draw_large_scene(np.random.default_rng(5))
    pixels = np.asarray(image).astype(int)
    for s in shapes:
        x0, y0, x1, y1 = s.box
        assert s.mask.shape == (y1 - y0, x1 - x0)
        assert MaskCrop.tight(s.mask, x0, y0).box == s.box  # the mask touches all four sides of its box
        inside = pixels[y0:y1, x0:x1][s.mask]
        assert inside.std(axis=0).max() < 15  # one fill colour (noise of sigma 10 on some scenes)
    kinds = {s.kind for s in shapes}
    squares = [s for s in shapes if s.kind == "square"]
    assert all(s.mask.all() for s in squares)
    if "circle" in kinds:
        circle = next(s for s in shapes if s.kind == "circle")
        assert not circle.mask[0, 0] and circle.mask[circle.mask.shape[0] // 2].all()


def test_the_same_seed_draws_the_same_scene_and_another_seed_another() -> None:
    a_image, a = draw_large_scene(np.random.default_rng(7))
    b_image, b = draw_large_scene(np.random.default_rng(7))
    _, c = draw_large_scene(np.random.default_rng(8))
    assert np.array_equal(np.asarray(a_image), np.asarray(b_image))
    assert [(s.kind, s.color, s.box) for s in a] == [(s.kind, s.color, s.box) for s in b]
    assert [s.box for s in a] != [s.box for s in c]


def test_too_many_shapes_for_the_scene_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot place"):
        draw_large_scene(np.random.default_rng(0), size=100, counts=(30, 30))


def test_benchmark_set_layout_and_determinism(tmp_path: Path) -> None:
    counts = write_large_benchmark_set(tmp_path / "a", scenes=3, seed=11)
    write_large_benchmark_set(tmp_path / "b", scenes=3, seed=11)
    coco = json.loads((tmp_path / "a" / "annotations.json").read_text())
    manifest = pd.read_parquet(tmp_path / "a" / "manifest.parquet")
    assert counts == {"images": 3, "prompts": len(manifest), "objects": len(coco["annotations"])}
    assert list(manifest.columns) == ["image_id", "path", "prompt", "answer"]
    assert [c["name"] for c in coco["categories"]] == list(CLASSES) and [c["id"] for c in coco["categories"]] == [
        1,
        2,
        3,
    ]
    for img in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        present = sorted({CLASSES[a["category_id"] - 1] for a in anns})
        prompts = manifest[manifest.image_id == img["id"]].prompt.tolist()
        assert prompts == ["detect circle ; square ; triangle"] + [f"segment {k}" for k in present]
        assert (img["width"], img["height"]) == (896, 896) and 10 <= len(anns) <= 30
        for a in anns:
            mask = rle_to_mask(a["segmentation"])
            x, y, w, h = a["bbox"]
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            assert a["area"] == int(mask.sum())
    for name in ["annotations.json", "manifest.parquet", "images/00000.png", "images/00002.png"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_perfect_rows_score_one_on_the_set(tmp_path: Path) -> None:
    """The set is what evals.shapes reads: rows that answer with the ground truth score AP50 1 and mIoU 1."""
    write_large_benchmark_set(tmp_path, scenes=2, seed=12)
    coco = json.loads((tmp_path / "annotations.json").read_text())
    manifest = pd.read_parquet(tmp_path / "manifest.parquet").to_dict("records")
    rows = []
    for m in manifest:
        kind = m["prompt"].removeprefix("segment ") if m["prompt"].startswith("segment ") else None
        anns = [a for a in coco["annotations"] if a["image_id"] == m["image_id"]]
        objects = [
            {"label": CLASSES[a["category_id"] - 1], "box": [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
             a["bbox"][1] + a["bbox"][3]], "score": 0.9, "mask": a["segmentation"] if kind else None}
            for a in anns if kind is None or CLASSES[a["category_id"] - 1] == kind
        ]  # fmt: skip
        rows.append({"image_id": m["image_id"], "prompt": m["prompt"], "text": "", "objects": objects, "error": None})
    scores = shapes_scores(rows, manifest, tmp_path / "annotations.json")
    assert scores["detection"]["AP50"] == pytest.approx(1.0)
    assert scores["segmentation"]["mIoU"] == pytest.approx(1.0)
