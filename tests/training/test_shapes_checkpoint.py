"""The bundled demo checkpoint: complete, small, loadable by transformers alike, and better than guessing.

The model is weak (its card reports what 30 CPU-minutes of training reached: it counts objects and knows some
colours and classes, but does not localize), so the floors below check what it does learn, on held-out images:
that the number of objects it writes follows the image, that its labels name shapes that are there, and that
its answers keep the formats it was trained on. They catch a broken checkpoint or a broken code
path (tokenizer, preprocessing, decoding, masks), not the noise of a few images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from decoders import MaskDecoder
from model import PaliGemma
from tasks import get_task
from training.shapes import CLASSES, SIZE, draw_scene

ROOT = Path(__file__).resolve().parents[2]
CKPT = ROOT / "checkpoints" / "paligemma-shapes"
HELD_OUT_SEED = 31337  # never used in training (the training stream is seeded from SeedSequence([0, rank]))


@pytest.fixture(scope="module")
def model() -> PaliGemma:
    return PaliGemma.from_pretrained(CKPT)


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(HELD_OUT_SEED)
    return [draw_scene(rng) for _ in range(24)]


def test_bundled_checkpoint_is_complete_and_small():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "vae.npz"):
        assert (CKPT / name).is_file(), name
    assert (CKPT / "model.safetensors").stat().st_size <= 30 * 2**20
    card = (CKPT / "README.md").read_text()
    assert "python -m jobs.finetune" in card and "--data-seed" in card and "python -m jobs.benchmark" in card


def test_bundled_checkpoint_has_paligemmas_token_layout(model):
    tok = model.tokenizer
    assert tok.loc0_id + 1024 == tok.seg0_id and tok.seg0_id + 128 == tok.image_id == model.config.image_token_id
    assert tok.tok.id_to_token(tok.loc0_id + 517) == "<loc0517>"
    assert tok.decode(tok.tok.encode("AB7Q", add_special_tokens=False).ids) == "AB7Q"


def test_bundled_checkpoint_gives_transformers_logits(model, scenes):
    from transformers import PaliGemmaForConditionalGeneration

    hf = PaliGemmaForConditionalGeneration.from_pretrained(CKPT, dtype=torch.float32).eval()
    ids, valid = model.tokenizer.batch(["detect circle ; square ; triangle"], model.config.num_image_tokens)
    pixels = model.image_processor([scenes[0][0]])
    with torch.no_grad():
        ours = model(ids, pixels, valid)
        theirs = hf(input_ids=ids, pixel_values=pixels, attention_mask=valid.long()).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_bundled_checkpoint_writes_as_many_objects_as_the_image_holds(model, scenes):
    detect = get_task("detect", classes=list(CLASSES))
    gens = model.generate([im for im, _ in scenes], [detect.prompt()] * len(scenes), max_new_tokens=48)
    found, truth, present = [], [], []
    for (_, shapes), text in zip(scenes, gens, strict=True):
        objects = detect.parse(text, width=SIZE, height=SIZE).objects
        found.append(len(objects))
        truth.append(len(shapes))
        present += [o.label in {s.kind for s in shapes} for o in objects]
    assert np.corrcoef(found, truth)[0, 1] >= 0.5, (found, truth)
    assert np.mean(present) >= 0.5  # labels of shapes that are in the image more often than not


def test_bundled_checkpoint_answers_counts_with_a_digit_and_captions_with_shapes(model, scenes):
    kinds = [shapes[0].kind for _, shapes in scenes[:8]]
    answers = model.generate([im for im, _ in scenes[:8]], [f"answer en how many {k}s are there?" for k in kinds], 3)
    assert all(a.strip() in {"0", "1", "2", "3", "4"} for a in answers), answers
    captions = model.generate([im for im, _ in scenes[:8]], ["caption en"] * 8, max_new_tokens=40)
    for caption in captions:
        words = [part.split(" ") for part in caption.strip().split(", ")]
        assert words and all(len(w) == 2 and w[1] in CLASSES for w in words), caption


def test_bundled_segment_answers_decode_to_masks(model, scenes):
    decoder = MaskDecoder.from_npz(CKPT / "vae.npz")
    image, shapes = scenes[1]
    task = get_task("segment", classes=[shapes[0].kind])
    (text,) = model.generate([image], [task.prompt()], max_new_tokens=96)
    result = task.parse(text, width=SIZE, height=SIZE, mask_decoder=decoder)
    assert result.objects and all(m is not None and m.shape == (SIZE, SIZE) and m.any() for m in result.masks)


def test_bundled_card_reports_the_benchmark_it_was_measured_with():
    card = (CKPT / "README.md").read_text()
    metrics = json.loads((CKPT / "metrics.json").read_text())
    for name, value in metrics["headline"].items():
        assert f"{value:.3f}" in card, name
