"""Prompts and pixels: the token layout PaliGemma was trained on, and SigLIP's image normalization."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from model import ImageProcessor, PromptTokenizer
from training.vocab import build_tokenizer

TOK = PromptTokenizer(build_tokenizer())


def test_prompt_layout_is_images_bos_text_newline():
    ids = TOK.encode_prompt("caption en", num_image_tokens=4)
    text = TOK.tok.encode("caption en", add_special_tokens=False).ids
    assert ids == [TOK.image_id] * 4 + [TOK.bos_id] + text + [TOK.newline_id]
    assert TOK.decode(text) == "caption en"


def test_batch_is_left_padded_so_every_prompt_ends_together():
    ids, valid = TOK.batch(["ocr", "answer en what is on the left"], num_image_tokens=2)
    short = len(TOK.encode_prompt("ocr", 2))
    assert ids.shape[1] == len(TOK.encode_prompt("answer en what is on the left", 2))
    assert valid[0].tolist() == [False] * (ids.shape[1] - short) + [True] * short
    assert (ids[0, ~valid[0]] == TOK.pad_id).all() and valid[1].all()
    assert ids[0, -1] == ids[1, -1] == TOK.newline_id


@pytest.mark.parametrize("token", ["<loc0000>", "<loc0512>", "<loc1023>", "<seg000>", "<seg127>", "<image>"])
def test_location_and_segment_tokens_are_single_tokens(token):
    ids = TOK.tok.encode(f"x{token}y", add_special_tokens=False).ids
    assert TOK.tok.token_to_id(token) in ids and len(ids) == 3
    assert TOK.decode(ids) == f"x{token}y"


def test_real_layout_puts_loc0000_at_256000():
    tok = PromptTokenizer(build_tokenizer(loc_offset=256000))
    assert (tok.loc0_id, tok.seg0_id, tok.image_id) == (256000, 257024, 257152)
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 1919), max_size=25))
def test_token_pieces_always_join_to_the_decoded_text(ids):
    pieces = TOK.pieces(ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == TOK.decode(ids)


def test_pieces_of_a_multibyte_label_keep_the_characters_whole():
    ids = TOK.tok.encode("<loc0001> 猫", add_special_tokens=False).ids  # byte-fallback tokens for 猫
    pieces = TOK.pieces(ids)
    assert pieces[0] == "<loc0001>" and "".join(pieces) == "<loc0001> 猫"


def test_image_processor_matches_transformers_siglip(photos):
    from transformers.models.siglip import SiglipImageProcessorPil

    ref = SiglipImageProcessorPil(size={"height": 224, "width": 224})
    ours = ImageProcessor(size=224)
    expected = ref(photos[:2], return_tensors="pt")["pixel_values"]
    got = ours(photos[:2])
    assert got.shape == expected.shape == (2, 3, 224, 224)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_image_processor_accepts_arrays_and_grayscale():
    gray = Image.fromarray(np.arange(30 * 20, dtype=np.uint8).reshape(30, 20))
    rgb = np.full((7, 9, 3), 255, dtype=np.uint8)
    x = ImageProcessor(size=14)([gray, rgb])
    assert x.shape == (2, 3, 14, 14) and x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x[1], torch.ones(3, 14, 14))
    assert torch.equal(x[0, 0], x[0, 1])  # grey becomes equal R, G and B
