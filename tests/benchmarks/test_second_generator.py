"""The second generator's held-out set is one the shapes benchmark scores like its own: a COCO set pycocotools
reads with every drawn object once and in bounds, and a manifest with every skill's prompt and the spec's words."""

from __future__ import annotations

import re

import pandas as pd
from PIL import Image
from pycocotools.coco import COCO

from benchmarks.second_generator import write_set
from training.shapes_dataset import DETECT_ALL


def test_the_set_holds_every_drawn_object_and_the_words_of_the_spec(tmp_path):
    counts = write_set(tmp_path, scenes=3, words=4, seed=5)
    assert counts["images"] == 7
    coco = COCO(str(tmp_path / "annotations.json"))
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["circle", "square", "triangle"]
    assert len(coco.getImgIds()) == 3
    for image in coco.loadImgs(coco.getImgIds()):
        assert Image.open(tmp_path / image["file_name"]).size == (image["width"], image["height"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert 1 <= len(anns) <= 4
        for a in anns:
            x, y, w, h = a["bbox"]
            assert x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"]
            assert 24 <= w <= 96 and a["area"] > 0
    manifest = pd.read_parquet(tmp_path / "manifest.parquet")
    assert len(manifest) == counts["prompts"]
    scenes = manifest[manifest.image_id <= 3]
    for _, prompts in scenes.groupby("image_id"):
        kinds = {p.split(" ")[0] for p in prompts.prompt}
        assert {DETECT_ALL, "caption en"} <= set(prompts.prompt) and {"segment", "answer"} <= kinds
    words = manifest[manifest.image_id > 3]
    assert list(words.prompt) == ["ocr"] * 4 and words.image_id.is_unique
    assert all(re.fullmatch(r"[A-Z2-9]{4,8}", w) for w in words.answer), list(words.answer)
    write_set(tmp_path / "again", scenes=3, words=4, seed=5)
    assert pd.read_parquet(tmp_path / "again" / "manifest.parquet").equals(manifest)
    assert (tmp_path / "again" / "annotations.json").read_text() == (tmp_path / "annotations.json").read_text()
