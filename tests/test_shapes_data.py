"""The synthetic shapes generator keeps to its public spec, and its targets are what the parsers read back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from decoders import parse_objects
from training.shapes import (
    CLASSES,
    COLORS,
    SIZE,
    WORD_ALPHABET,
    _iou,
    caption_text,
    draw_scene,
    draw_word,
    example_stream,
    scene_examples,
)
from training.shapes_dataset import write_benchmark_set


def test_scenes_keep_to_the_spec():
    rng = np.random.default_rng(3)
    counts = set()
    for _ in range(150):
        image, shapes = draw_scene(rng)
        assert image.size == (SIZE, SIZE) and image.mode == "RGB"
        assert 1 <= len(shapes) <= 4
        counts.add(len(shapes))
        pixels = np.asarray(image).astype(int)
        background = ~np.any([s.mask for s in shapes], axis=0)
        assert np.median(pixels[background], axis=0).min() >= 195  # light, maybe noisy
        for s in shapes:
            x0, y0, x1, y1 = s.box
            w, h = x1 - x0, y1 - y0
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            assert 24 <= w <= 96 and 24 <= h <= 96
            if s.kind == "triangle":
                assert 0.8 * w - 1 <= h <= 1.2 * w + 1
            else:
                assert w == h
            if s.mask.sum() > 50:
                fill = np.median(pixels[s.mask], axis=0)
                assert np.abs(fill - COLORS[s.color]).max() <= 20.5
        for i, a in enumerate(shapes):
            for b in shapes[i + 1 :]:
                assert _iou(a.box, b.box) <= 0.1
    assert counts == {1, 2, 3, 4}


def test_the_same_seed_draws_the_same_data():
    a, b = next(example_stream(5)), next(example_stream(5))
    assert (a.prefix, a.suffix) == (b.prefix, b.suffix)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    c = next(example_stream(6))
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))


def test_word_images_hold_one_dark_word_inside_the_canvas():
    rng = np.random.default_rng(0)
    for _ in range(40):
        image, word = draw_word(rng)
        assert 4 <= len(word) <= 8 and set(word) <= set(WORD_ALPHABET)
        dark = np.asarray(image).max(axis=2) < 100
        ys, xs = np.nonzero(dark)
        assert len(ys) > 30  # the word is drawn
        assert xs.min() > 0 and ys.min() > 0 and xs.max() < SIZE - 1 and ys.max() < SIZE - 1


def test_detect_targets_follow_prompt_class_order_then_top_to_bottom_and_parse_back():
    rng = np.random.default_rng(11)
    seen = 0
    for _ in range(60):
        image, shapes = draw_scene(rng)
        ex = scene_examples(image, shapes, "detect", rng)
        classes = ex.prefix.removeprefix("detect ").split(" ; ")
        objects = parse_objects(ex.suffix, SIZE, SIZE)
        expected = [s for c in classes for s in sorted((s for s in shapes if s.kind == c), key=lambda s: s.box[1])]
        assert [o.label for o in objects] == [s.kind for s in expected]
        for o, s in zip(objects, expected, strict=True):
            assert np.abs(np.array(o.box) - np.array(s.box)).max() <= 0.5  # the 1023-bin grid on 224 px
        seen += len(objects)
    assert seen > 30


def test_caption_is_left_to_right_and_count_is_a_digit():
    rng = np.random.default_rng(2)
    image, shapes = draw_scene(rng, num_objects=3)
    caption = caption_text(shapes)
    lefts = sorted(shapes, key=lambda s: s.box[0])
    assert caption == ", ".join(f"{s.color} {s.kind}" for s in lefts)
    ex = scene_examples(image, shapes, "count", rng)
    kind = ex.prefix.removeprefix("answer en how many ").removesuffix("s are there?")
    assert kind in CLASSES and ex.suffix == str(sum(s.kind == kind for s in shapes))


def test_segment_targets_need_an_encoder():
    rng = np.random.default_rng(0)
    image, shapes = draw_scene(rng)
    with pytest.raises(ValueError, match="VQ-VAE"):
        scene_examples(image, shapes, "segment", np.random.default_rng(1))


def test_benchmark_set_holds_ground_truth_and_answers(tmp_path):
    counts = write_benchmark_set(tmp_path, num_scenes=3, num_words=2, seed=9)
    coco = json.loads((tmp_path / "annotations.json").read_text())
    manifest = pd.read_parquet(tmp_path / "manifest.parquet")
    assert counts["images"] == 5 and len(coco["images"]) == 3
    assert [c["name"] for c in coco["categories"]] == list(CLASSES)
    assert (manifest.prompt == "ocr").sum() == 2 and (manifest.prompt == "caption en").sum() == 3
    for path in manifest.path:
        assert (tmp_path / path).is_file()
    # Every segment prompt asks for a class that the image has.
    for row in manifest[manifest.prompt.str.startswith("segment")].itertuples():
        kind = row.prompt.removeprefix("segment ")
        cat = coco["categories"][list(CLASSES).index(kind)]["id"]
        assert any(a["image_id"] == row.image_id and a["category_id"] == cat for a in coco["annotations"])


def test_curriculum_grows_the_scenes_then_keeps_to_the_spec():
    stream = example_stream(4, None, {"caption": 1.0}, curriculum=(30, 60))
    objects = [len(next(stream).suffix.split(", ")) for _ in range(400)]
    assert set(objects[:30]) == {1} and set(objects[30:60]) == {1, 2} and set(objects[60:]) == {1, 2, 3, 4}


def test_first_stage_draws_only_its_tasks():
    stream = example_stream(4, None, {"caption": 1.0, "count": 1.0, "ocr": 1.0}, (50, 60), ("caption", "count"))
    tasks = [next(stream).task for _ in range(300)]
    assert set(tasks[:50]) == {"caption", "count"} and "ocr" in tasks[50:]
