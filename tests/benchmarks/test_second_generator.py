"""The second generator's COCO set is one that pycocotools reads, with every drawn object once and in bounds."""

from __future__ import annotations

import json

from PIL import Image
from pycocotools.coco import COCO

from benchmarks.second_generator import write_set


def test_the_set_is_a_coco_set_of_every_drawn_object(tmp_path):
    path = write_set(tmp_path, scenes=3, seed=5)
    coco = COCO(str(path))
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["circle", "square", "triangle"]
    assert len(coco.getImgIds()) == 3
    for image in coco.loadImgs(coco.getImgIds()):
        assert Image.open(tmp_path / "images" / image["file_name"]).size == (image["width"], image["height"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert 1 <= len(anns) <= 4
        for a in anns:
            x, y, w, h = a["bbox"]
            assert x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"]
            assert 24 <= w <= 96 and a["area"] > 0
    assert write_set(tmp_path / "again", scenes=3, seed=5).read_text() == json.dumps(json.loads(path.read_text()))
