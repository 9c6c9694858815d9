"""Tiled labeling through the label job on a real local Ray: one row per (image, prompt) whatever the number of
tiles, objects in image pixels, the tiles' answers kept, a failing tile named in its row's error, and --resume,
exports and previews seeing ordinary rows. Answers come from testing.fakes.TileCorners (a box in the middle of
every tile)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from jobs.label import build_parser, config_from_args, run
from labeling.tiles import tile_grid
from rows import PartStore
from testing.fakes import AnswersTiles

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def images(photo_paths, tmp_path_factory):
    folder = tmp_path_factory.mktemp("large")
    Image.open(photo_paths[0]).convert("RGB").resize((300, 200)).save(folder / "a.png")
    half_black = np.asarray(Image.open(photo_paths[1]).convert("RGB").resize((200, 130))).copy()
    half_black[:, :100] = 0  # its left tile is black: the fake model fails on it
    Image.fromarray(half_black).save(folder / "b.png")
    return folder


def label(checkpoint, images, out, *extra):
    argv = ["--checkpoint", str(checkpoint("tiny")[0]), "--images", str(images), "--output", str(out),
            "--task", "detect", "--classes", "cat ; dog", "--per-class", "--tile", "100", "--tile-overlap", "0.2",
            "--max-new-tokens", "8", "--no-progress", *extra]  # fmt: skip
    return run(config_from_args(build_parser().parse_args(argv)), argv, replica_class=AnswersTiles)[1]


def test_a_tiled_run_writes_one_row_per_image_and_prompt_with_every_tile(checkpoint, images, tmp_path):
    out = tmp_path / "out"
    assert label(checkpoint, images, out, "--export", "yolo", "--previews", "2") == 0
    rows = {(r["path"].rsplit("/", 1)[-1], r["prompt"]): r for r in PartStore(out / "predictions").iter_rows()}
    assert sorted(rows) == [(f, p) for f in ("a.png", "b.png") for p in ("detect cat", "detect dog")]
    a = rows[("a.png", "detect cat")]
    grid = tile_grid(300, 200, 100, 0.2)
    assert a["error"] is None and a["tiles"] == len(grid) == len(a["tile_texts"]) == 12
    assert (a["width"], a["height"]) == (300, 200)
    boxes = sorted(tuple(round(v) for v in o["box"]) for o in a["objects"])
    expected = sorted((x0 + 38, y0 + 38, x0 + 63, y0 + 63) for x0, y0, _, _ in grid)  # each tile's middle box
    assert len(boxes) == len(expected) and all(abs(b - e) <= 1 for bb, ee in zip(boxes, expected, strict=True)
                                                 for b, e in zip(bb, ee, strict=True))  # fmt: skip
    assert {o["label"] for o in a["objects"]} == {"cat"} and a["text"].count("<loc") == 4 * len(boxes)
    b = rows[("b.png", "detect dog")]
    assert b["error"].startswith("tile 0 (0, 0, 100, 100): generation failed") and b["error_kind"] == "generation"
    assert b["tiles"] == len(tile_grid(200, 130, 100, 0.2))
    labels = sorted((out / "exports" / "yolo" / "labels").iterdir())
    assert len(labels) == 1 and len(labels[0].read_text().splitlines()) == 2 * len(grid)  # cat's and dog's
    assert len(list((out / "previews").iterdir())) == 1
    settings = json.loads((out / "run.json").read_text())["tiles"]
    assert settings == {"tile": 100, "overlap": 0.2, "full_image": False, "merge": "nmm"}


def test_resume_refuses_other_tile_settings_and_retries_a_failed_tile(checkpoint, images, tmp_path):
    out = tmp_path / "out"
    assert label(checkpoint, images, out) == 0
    assert label(checkpoint, images, out, "--resume", "--tile-overlap", "0.3") == 2  # other rows would mix in
    assert label(checkpoint, images, out, "--resume", "--retry-errors", "generation") == 0
    rows = list(PartStore(out / "predictions").iter_rows())
    assert len(rows) == len({(r["image_id"], r["prompt"]) for r in rows}) == 4
