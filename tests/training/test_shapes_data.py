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
    Stage,
    _iou,
    caption_text,
    draw_scene,
    draw_word,
    example_stream,
    scene_examples,
    shapes_example,
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


def test_stages_grow_the_scenes_and_words_then_keep_to_the_spec():
    stages = (Stage(30, max_objects=1, word_lengths=(1, 2), mix={"caption": 1.0}),
              Stage(30, max_objects=2, mix={"caption": 1.0}), Stage(1, mix={"caption": 1.0, "ocr": 1.0}))  # fmt: skip
    examples = list(zip(range(400), example_stream(4, None, stages), strict=False))
    objects = [len(e.suffix.split(", ")) for _, e in examples if e.task == "caption"]
    assert set(objects[:30]) == {1} and set(objects[30:60]) == {1, 2} and set(objects[60:]) == {1, 2, 3, 4}
    words = [len(e.suffix) for i, e in examples if e.task == "ocr"]
    assert words and min(words) >= 4  # the last stage keeps to the spec's 4-8 characters
    short = [shapes_example(4, i, None, (Stage(10, word_lengths=(1, 2), mix={"ocr": 1.0}),)).suffix for i in range(10)]
    assert {len(w) for w in short} <= {1, 2}


def test_any_example_can_be_drawn_alone():
    stages = (Stage(20, max_objects=1),)
    stream = list(zip(range(30), example_stream(7, None, stages), strict=False))
    for i in (0, 13, 29):
        alone = shapes_example(7, i, None, stages)
        assert (alone.prefix, alone.suffix) == (stream[i][1].prefix, stream[i][1].suffix)
        assert np.array_equal(np.asarray(alone.image), np.asarray(stream[i][1].image))


def test_detect_prompts_name_the_objects_present_and_a_measured_share_names_none():
    examples = [shapes_example(3, i, None, (Stage(1, mix={"detect": 1.0}),)) for i in range(600)]
    empty = sum(not e.suffix for e in examples) / len(examples)
    # Negatives: only absent classes (the answer is empty) in about NEGATIVE_SHARE of prompts, fewer when an image
    # holds every class; no more one-class prompts that leave most answers empty.
    assert 0.04 <= empty <= 0.12
    benchmark_order = sum(e.prefix == "detect circle ; square ; triangle" for e in examples)
    assert benchmark_order > 30  # the benchmark's own prompt is common


def test_a_stage_refuses_bad_values():
    with pytest.raises(ValueError, match="max_objects"):
        Stage(10, max_objects=5)
    with pytest.raises(ValueError, match="word_lengths"):
        Stage(10, word_lengths=(5, 3))
    with pytest.raises(ValueError, match="unknown stage keys"):
        Stage.from_dict({"examples": 5, "colour": "red"})
