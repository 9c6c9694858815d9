"""Every export has one file, task or entry per image with all of its objects, wherever the image's rows are.

With one prompt per class, an image's rows finish in any order and land in different parts; the exports used to
merge an image's rows only when they arrived side by side, so an image came out twice, each copy missing the other's
objects (`make demo` exported 14 YOLO images for 12). A real label run on Ray labels a manifest of per-class prompts
in class-major order (every image's `detect cat`, then every image's `detect dog`, ...), one row per batch and per
part, so that an image's rows are far apart; the answers come from testing.fakes.PromptBoxes (one known box per
prompted class)."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import pyarrow.parquet as pq
import pytest

from jobs.label import build_parser, config_from_args, run
from rows import PartStore
from testing.fakes import AnswersWithBoxes

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

CLASSES = ("cat", "dog", "bird")


@pytest.fixture(scope="module")
def run_folder(checkpoint, photo_paths, tmp_path_factory):
    import pandas as pd

    images = tmp_path_factory.mktemp("images")
    for p in photo_paths:
        shutil.copy(p, images / p.name)
    manifest = images / "manifest.parquet"
    pd.DataFrame([{"path": p.name, "prompt": f"detect {c}"} for c in CLASSES for p in photo_paths]).to_parquet(manifest)
    out = tmp_path_factory.mktemp("run") / "out"
    argv = ["--checkpoint", str(checkpoint("tiny")[0]), "--manifest", str(manifest), "--batch-size", "1",
            "--rows-per-part", "1", "--export", "coco,yolo,voc,labelstudio", "--output", str(out),
            "--no-progress"]  # fmt: skip
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        status = run(config_from_args(build_parser().parse_args(argv)), argv, replica_class=AnswersWithBoxes)[1]
    finally:
        ray.shutdown()
    assert status == 0
    return out, len(photo_paths)


def test_the_rows_of_an_image_are_in_several_parts_and_apart(run_folder):
    out, n = run_folder
    parts_of: dict[int, set[str]] = {}
    written = []
    for part in PartStore(out / "predictions").parts():
        for image_id in pq.read_table(part.path, columns=["image_id"])["image_id"].to_pylist():
            parts_of.setdefault(image_id, set()).add(part.name)
            written.append(image_id)
    assert len(parts_of) == n and all(len(parts) == len(CLASSES) for parts in parts_of.values())
    stretches = sum(1 for i, image_id in enumerate(written) if i == 0 or written[i - 1] != image_id)
    assert stretches > n  # in the order the rows were written, an image's rows are not all side by side


def test_yolo_has_one_image_and_one_label_file_per_image_with_every_object(run_folder):
    out, n = run_folder
    images = sorted(p.name for p in (out / "exports" / "yolo" / "images").iterdir())
    labels = sorted((out / "exports" / "yolo" / "labels").iterdir())
    assert len(images) == n and len(labels) == n
    assert all(len(p.read_text().splitlines()) == len(CLASSES) for p in labels), [p.read_text() for p in labels]


def test_voc_has_one_annotation_per_image_with_every_object(run_folder):
    out, n = run_folder
    files = sorted((out / "exports" / "voc" / "annotations").glob("*.xml"))
    assert len(files) == n and len(list((out / "exports" / "voc" / "images").iterdir())) == n
    for f in files:
        names = sorted(o.findtext("name") for o in ET.parse(f).getroot().iter("object"))
        assert names == sorted(CLASSES)


def test_label_studio_has_one_task_per_image_with_every_object(run_folder):
    out, n = run_folder
    tasks = json.loads((out / "exports" / "labelstudio" / "tasks.json").read_text())
    assert len(tasks) == n and len({t["data"]["image_id"] for t in tasks}) == n
    for t in tasks:
        labels = [r["value"]["rectanglelabels"][0] for r in t["predictions"][0]["result"]]
        assert sorted(labels) == sorted(CLASSES)


def test_coco_lists_each_image_once_with_every_object(run_folder):
    out, n = run_folder
    dataset = json.loads((out / "coco_dataset.json").read_text())  # --export coco is this file
    assert len(dataset["images"]) == n and len({i["id"] for i in dataset["images"]}) == n
    per_image = {i["id"]: 0 for i in dataset["images"]}
    for a in dataset["annotations"]:
        per_image[a["image_id"]] += 1
    assert set(per_image.values()) == {len(CLASSES)}
    assert len({a["id"] for a in dataset["annotations"]}) == n * len(CLASSES)
