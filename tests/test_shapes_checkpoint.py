"""The bundled demo checkpoint: complete, small, loadable by transformers alike, and it really sees shapes.

The floors below sit well under what the model card reports on 200 held-out images, so that they catch a broken
checkpoint or a broken code path (tokenizer, preprocessing, decoding, masks), not the noise of a dozen images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from decoders import MaskDecoder
from evals.refseg import box_iou, mask_iou
from model import PaliGemma
from training.shapes import CLASSES, SIZE, caption_text, draw_scene, draw_word

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints" / "paligemma-shapes"
HELD_OUT_SEED = 31337  # never used in training (the training stream is seeded from SeedSequence([0, rank]))


@pytest.fixture(scope="module")
def model() -> PaliGemma:
    return PaliGemma.from_pretrained(CKPT)


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


def test_bundled_checkpoint_gives_transformers_logits(model):
    from transformers import PaliGemmaForConditionalGeneration

    hf = PaliGemmaForConditionalGeneration.from_pretrained(CKPT, dtype=torch.float32).eval()
    image, _ = draw_scene(np.random.default_rng(HELD_OUT_SEED))
    ids, valid = model.tokenizer.batch(["detect circle ; square ; triangle"], model.config.num_image_tokens)
    pixels = model.image_processor([image])
    with torch.no_grad():
        ours = model(ids, pixels, valid)
        theirs = hf(input_ids=ids, pixel_values=pixels, attention_mask=valid.long()).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def _matches(pred, truth) -> int:
    """Greedy one-to-one matches of the same label at box IoU >= 0.5."""
    used, hits = set(), 0
    for label, box in truth:
        for i, (plabel, pbox) in enumerate(pred):
            if i not in used and plabel == label and box_iou(pbox, box) >= 0.5:
                used.add(i)
                hits += 1
                break
    return hits


def test_bundled_checkpoint_detects_and_segments_held_out_shapes(model):
    from tasks import get_task

    rng = np.random.default_rng(HELD_OUT_SEED)
    scenes = [draw_scene(rng) for _ in range(12)]
    detect = get_task("detect", classes=list(CLASSES))
    gens = model.generate([im for im, _ in scenes], [detect.prompt()] * len(scenes), max_new_tokens=48)
    hits = n_pred = n_true = 0
    for (_, shapes), gen in zip(scenes, gens, strict=True):
        objects = detect.parse(gen.text, width=SIZE, height=SIZE).objects
        truth = [(s.kind, s.box) for s in shapes]
        hits += _matches([(o.label, o.box) for o in objects], truth)
        n_pred, n_true = n_pred + len(objects), n_true + len(truth)
    assert hits / n_true >= 0.6 and hits / max(n_pred, 1) >= 0.6, (hits, n_pred, n_true)

    decoder = MaskDecoder.from_npz(CKPT / "vae.npz")
    segment = get_task("segment", classes=[scenes[0][1][0].kind])
    ious = []
    for image, shapes in scenes[:6]:
        kind = shapes[0].kind
        gen = model.generate([image], [f"segment {kind}"], max_new_tokens=96)[0]
        result = get_task("segment", classes=[kind]).parse(gen.text, width=SIZE, height=SIZE, mask_decoder=decoder)
        truth = np.any([s.mask for s in shapes if s.kind == kind], axis=0)
        masks = [o.mask for o in result.objects if o.mask is not None]
        ious.append(mask_iou(np.any(masks, axis=0), truth) if masks else 0.0)
    assert segment.classes and np.mean(ious) >= 0.5, ious


def test_bundled_checkpoint_reads_counts_and_captions(model):
    rng = np.random.default_rng(HELD_OUT_SEED + 1)
    words = [draw_word(rng) for _ in range(8)]
    scenes = [draw_scene(rng) for _ in range(8)]
    gens = model.generate([im for im, _ in words], ["ocr"] * 8, max_new_tokens=12)
    read = sum(g.text.strip() == w for g, (_, w) in zip(gens, words, strict=True))
    questions = [f"answer en how many {s[0].kind}s are there?" for _, s in scenes]
    counts = model.generate([im for im, _ in scenes], questions, max_new_tokens=3)
    counted = sum(
        g.text.strip() == str(sum(x.kind == s[0].kind for x in s)) for g, (_, s) in zip(counts, scenes, strict=True)
    )
    captions = model.generate([im for im, _ in scenes], ["caption en"] * 8, max_new_tokens=40)
    captioned = sum(g.text.strip() == caption_text(s) for g, (_, s) in zip(captions, scenes, strict=True))
    assert read >= 4 and counted >= 5 and captioned >= 3, (read, counted, captioned)


def test_bundled_card_reports_the_benchmark_it_was_measured_with():
    card = (CKPT / "README.md").read_text()
    metrics = json.loads((CKPT / "metrics.json").read_text())
    for name, value in metrics["headline"].items():
        assert f"{value:.3f}" in card, name
