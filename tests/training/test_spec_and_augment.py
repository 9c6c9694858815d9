"""The fine-tuning spec checks itself with one line naming the option, reads old runs' configs; augmentation keeps
every answer true."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decoders import mask_to_rle, parse_objects
from jobs.finetune import main as finetune
from specs.fields import SpecError
from specs.finetune import FinetuneConfig
from training.augment import Augment, augment_record

OK = {"output": "/tmp/run", "scratch": "tiny"}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lr": 0}, "--lr must be above 0, got 0"),
        ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
        ({"hflip": 1.5}, "--hflip must be a number in [0, 1], got 1.5"),
        ({"scale_jitter": 1.0}, "--scale-jitter must be in [0, 1), got 1.0"),
        ({"patience": 3}, "--patience needs --val"),
        ({"train": "x.jsonl", "eval_every": 5}, "--eval-every needs --val (or --train shapes"),
        ({"train": "x.jsonl", "vision_pretrain": 10}, "--vision-pretrain uses the shapes generator"),
        ({"output": ""}, "--output is required"),
        ({"model": "m"}, "give exactly one of --model"),  # and scratch: both
        ({"stages": [{"examples": 0}]}, "--curriculum: a stage needs examples >= 1"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_option(changes, message):
    with pytest.raises(SpecError) as e:
        FinetuneConfig(**(OK | changes))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_old_run_configs_still_read_and_unknown_keys_are_named():
    old = {k: v for k, v in FinetuneConfig(**OK, steps=10).to_dict().items() if k not in ("val", "hflip", "patience")}
    assert FinetuneConfig.from_dict(old).steps == 10  # written before --val existed: the defaults fill in
    with pytest.raises(SpecError, match="unknown settings lora_dropouts"):
        FinetuneConfig.from_dict(old | {"lora_dropouts": 0.1})


def test_the_job_refuses_qlora_on_a_cpu_and_bad_values_with_status_2(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.fail("this test is about CPU machines; on a GPU the qlora path is what runs")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert finetune(["--model", str(tmp_path / "m"), "--mode", "qlora", "--output", str(tmp_path / "o")]) == 2
    assert "--mode qlora needs a CUDA GPU" in capsys.readouterr().err
    assert finetune(["--scratch", "tiny", "--lr", "0", "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == "error: --lr must be above 0, got 0.0"


W, H = 64, 48


def _scene():
    pixels = np.full((H, W, 3), 255, np.uint8)
    pixels[10:20, 5:15] = (255, 0, 0)  # red square, top left
    pixels[30:44, 40:60] = (0, 0, 255)  # blue box, bottom right
    red = np.zeros((H, W), bool)
    red[10:20, 5:15] = True
    blue = np.zeros((H, W), bool)
    blue[30:44, 40:60] = True
    objects = [{"label": "red", "box": [5, 10, 15, 20], "mask": mask_to_rle(red)},
               {"label": "blue", "box": [40, 30, 60, 44], "mask": mask_to_rle(blue)}]  # fmt: skip
    return Image.fromarray(pixels), objects


def _colour_inside(image, box) -> np.ndarray:
    x0, y0, x1, y1 = (round(v) for v in box)
    return np.asarray(image)[y0:y1, x0:x1].reshape(-1, 3).mean(0)


def test_a_flip_moves_boxes_with_the_pixels_and_never_flips_left_or_right():
    image, objects = _scene()
    aug = Augment(hflip=1.0)
    flipped, suffix = augment_record(image, "detect red ; blue", "", "detect", objects, False, aug,
                                     np.random.default_rng(0))  # fmt: skip
    got = parse_objects(suffix, W, H)
    assert [o.label for o in got] == ["red", "blue"]
    assert np.abs(np.array(got[0].box) - [49, 10, 59, 20]).max() <= W / 1023  # x -> W - x
    assert np.allclose(_colour_inside(flipped, got[0].box), (255, 0, 0), atol=10)
    assert np.allclose(_colour_inside(flipped, got[1].box), (0, 0, 255), atol=10)
    same, text = augment_record(image, "detect the red one on the left", "x", "detect", objects, False, aug,
                                np.random.default_rng(0))  # fmt: skip
    assert same is image and text == "x"
    caption, text = augment_record(image, "caption en", "a red square", "caption", None, False, aug,
                                   np.random.default_rng(0))  # fmt: skip
    assert caption is image and text == "a red square"


def test_a_zoom_moves_boxes_and_masks_exactly_and_drops_what_leaves_the_frame():
    from decoders import rle_to_mask
    from training.augment import Moved, zoom

    image, objects = _scene()
    kept_counts = set()
    for seed in range(24):
        moved = [Moved(o["label"], tuple(o["box"]), rle_to_mask(o["mask"])) for o in objects]
        rng = np.random.default_rng(seed)
        out, kept = zoom(image, moved, (0.6, 1.8)[seed % 2], rng)
        assert out.size == image.size
        for o in kept:  # every kept box and mask still covers its colour
            colour = (255, 0, 0) if o.label == "red" else (0, 0, 255)
            assert np.allclose(_colour_inside(out, o.box), colour, atol=40), (seed, o.label, o.box)
            assert np.allclose(np.asarray(out)[o.mask].mean(0), colour, atol=40), (seed, o.label)
        kept_counts.add(len(kept))
    assert 2 in kept_counts and min(kept_counts) < 2  # zooming in pushes objects out of the frame, sometimes
    # A segment record's masks come back from the encoder's codes of the moved mask: the answer has 16 segs each.
    from decoders import MaskEncoder

    enc = MaskEncoder.from_npz(Path(__file__).resolve().parents[2] / "checkpoints" / "paligemma-shapes" / "vae.npz")
    _, suffix = augment_record(image, "segment red ; blue", "", "segment", objects, False, Augment(scale_jitter=0.3),
                               np.random.default_rng(1), enc)  # fmt: skip
    assert all(o.seg_tokens is not None for o in parse_objects(suffix, W, H))


def test_object_order_is_reshuffled_per_epoch_and_fixed_per_epoch(tmp_path):
    from training.data import FileSource

    image, _ = _scene()
    image.save(tmp_path / "a.png")
    objects = [{"label": f"o{i}", "box": [i * 6, 1, i * 6 + 5, 6], "mask": None} for i in range(6)]
    suffix = " ; ".join(f"<loc0000><loc{i * 6 * 1023 // W:04d}><loc0100><loc{(i * 6 + 5) * 1023 // W:04d}> o{i}"
                        for i in range(6))  # fmt: skip
    record = {"image": "a.png", "prefix": "detect o", "suffix": suffix, "task": "detect", "objects": objects,
              "shuffle": True}  # fmt: skip
    (tmp_path / "r.jsonl").write_text(json.dumps(record) + "\n")
    source = FileSource(tmp_path / "r.jsonl", seed=0)
    orders = [[o.label for o in parse_objects(source.record(e).suffix, W, H)] for e in range(4)]
    assert all(sorted(o) == [f"o{i}" for i in range(6)] for o in orders)
    assert len({tuple(o) for o in orders}) > 1  # a new order each epoch...
    assert orders[2] == [o.label for o in parse_objects(FileSource(tmp_path / "r.jsonl", 0).record(2).suffix, W, H)]
