"""decoders.vqvae and decoders.masks: the VQ-VAE against an independent forward pass, pasting, cropping, RLE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from decoders import (
    MaskDecoder,
    MaskEncoder,
    crop_to_box,
    mask_to_rle,
    paste_mask,
    paste_masks,
    rle_to_mask,
)
from testing.vae import write_random_vae_npz


@pytest.fixture(scope="module")
def vae_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(write_random_vae_npz(tmp_path_factory.mktemp("vae") / "vae-oid.npz", codebook_dim=8, seed=1))


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return dict(npz)


def reference_decode(weights: dict[str, np.ndarray], codes: np.ndarray) -> torch.Tensor:
    """The decoder of docs/FORMATS.md ("Masks") written out with functional calls, independently of decoders.vqvae."""
    w = {k: torch.from_numpy(v) for k, v in weights.items()}
    emb = w["_vq_vae._embedding"]
    n = len(codes)
    x = torch.zeros(n, emb.shape[1], 4, 4)
    for r in range(4):  # raster order: code 4*r + c sits at row r, column c
        for c in range(4):
            x[:, :, r, c] = emb[torch.from_numpy(codes[:, 4 * r + c])]
    x = F.relu(F.conv2d(x, w["decoder.0.weight"], w["decoder.0.bias"]))
    for block in ("decoder.2.net", "decoder.3.net"):
        h = F.relu(F.conv2d(x, w[f"{block}.0.weight"], w[f"{block}.0.bias"], padding=1))
        h = F.relu(F.conv2d(h, w[f"{block}.2.weight"], w[f"{block}.2.bias"], padding=1))
        x = x + F.conv2d(h, w[f"{block}.4.weight"], w[f"{block}.4.bias"])
    for i in (4, 6, 8, 10):
        x = F.relu(F.conv_transpose2d(x, w[f"decoder.{i}.weight"], w[f"decoder.{i}.bias"], stride=2, padding=1))
    return F.conv2d(x, w["decoder.12.weight"], w["decoder.12.bias"])[:, 0]


@pytest.mark.parametrize("codebook_dim", [8, 512])  # a tiny test width, and the released file's width
def test_decoder_matches_reference_forward(tmp_path: Path, codebook_dim: int) -> None:
    path = write_random_vae_npz(tmp_path / "vae.npz", codebook_dim=codebook_dim)
    codes = np.random.default_rng(0).integers(0, 128, size=(5, 16))
    got = MaskDecoder.from_npz(path).decode(codes)
    want = reference_decode(load(Path(path)), codes)
    assert got.shape == (5, 64, 64)
    assert want.abs().max() > 0.1  # the random checkpoint gives a real signal, not zeros
    assert ((got - want).norm() / want.norm()).item() < 1e-4


def test_decode_in_a_batch_equals_one_at_a_time(vae_path: Path) -> None:
    decoder = MaskDecoder.from_npz(vae_path)
    codes = torch.randint(0, 128, (4, 16))
    batched = decoder.decode(codes)
    single = torch.cat([decoder.decode(codes[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)  # fp32 sums in another order


def test_decoder_ignores_encoder_and_unknown_keys(tmp_path: Path, vae_path: Path) -> None:
    weights = load(vae_path)
    garbage = {k: np.zeros(3, dtype=np.float32) for k in weights if k.startswith("encoder.")}
    np.savez(tmp_path / "odd.npz", **{**weights, **garbage, "_vq_vae._ema_w": np.ones((2, 2))})
    codes = np.arange(32).reshape(2, 16)
    torch.testing.assert_close(
        MaskDecoder.from_npz(tmp_path / "odd.npz").decode(codes), MaskDecoder.from_npz(vae_path).decode(codes)
    )


@pytest.mark.parametrize(
    ("key", "value", "error", "message"),
    [
        ("decoder.6.weight", None, KeyError, "decoder.6.weight"),  # missing key
        ("_vq_vae._embedding", None, KeyError, "_vq_vae._embedding"),  # missing codebook
        ("decoder.12.weight", np.zeros((2, 16, 1, 1)), ValueError, r"decoder.12.weight.*\(1, 16, 1, 1\)"),  # shape
        ("decoder.2.net.0.bias", np.zeros((128, 1)), ValueError, "decoder.2.net.0.bias"),  # wrong rank
        ("_vq_vae._embedding", np.zeros(8), ValueError, "_vq_vae._embedding"),  # codebook not 2-D
    ],
)
def test_bad_checkpoint_raises_naming_file_and_key(
    tmp_path: Path, vae_path: Path, key: str, value: np.ndarray | None, error: type, message: str
) -> None:
    weights = load(vae_path)
    if value is None:
        del weights[key]
    else:
        weights[key] = value
    np.savez(tmp_path / "bad.npz", **weights)
    with pytest.raises(error, match=message) as info:
        MaskDecoder.from_npz(tmp_path / "bad.npz")
    assert "bad.npz" in str(info.value)


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (np.zeros((2, 15), dtype=int), r"shape \(N, 16\)"),  # 15 codes
        (np.zeros(16, dtype=int), r"shape \(N, 16\)"),  # not batched
        (np.full((1, 16), 128), "0..127"),  # past the codebook
        (np.zeros((1, 16)), "integer"),  # floats
    ],
)
def test_decode_rejects_bad_codes(vae_path: Path, codes: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaskDecoder.from_npz(vae_path).decode(codes)


def test_decode_of_no_masks_is_empty(vae_path: Path) -> None:
    assert MaskDecoder.from_npz(vae_path).decode(np.zeros((0, 16), dtype=int)).shape == (0, 64, 64)


# --- placing masks ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def constant_vae(tmp_path_factory: pytest.TempPathFactory, vae_path: Path) -> MaskDecoder:
    """A decoder whose output is +1 everywhere for any codes: every decoded mask fills its box."""
    weights = {k: np.zeros_like(v) if k.startswith("decoder.") else v for k, v in load(vae_path).items()}
    weights["decoder.12.bias"] = np.ones(1, dtype=np.float32)
    path = tmp_path_factory.mktemp("const") / "vae.npz"
    np.savez(path, **weights)
    return MaskDecoder.from_npz(path)


RECTANGLES = [
    # (box x0, y0, x1, y1 in pixels, expected rows, expected cols) on a 37 x 53 image
    ((0.0, 0.0, 53.0, 37.0), (0, 37), (0, 53)),  # the whole image
    ((10.4, 3.5, 20.6, 30.2), (4, 30), (10, 21)),  # edges rounded half up
    ((-10.2, 5.6, 20.4, 50.0), (6, 37), (0, 20)),  # sticks out left and bottom: clipped
    ((40.0, -3.0, 70.0, 2.0), (0, 2), (40, 53)),  # sticks out top and right
    ((52.6, 0.0, 60.0, 10.0), None, None),  # entirely right of the image: empty
    ((5.0, 5.0, 5.4, 9.0), None, None),  # rounds to zero width: empty
]


@pytest.mark.parametrize(("box", "rows", "cols"), RECTANGLES)
def test_known_codes_paste_into_the_box_at_odd_image_size(
    constant_vae: MaskDecoder, box: tuple, rows: tuple | None, cols: tuple | None
) -> None:
    raw = constant_vae.decode(np.full((1, 16), 7))
    mask = paste_mask(raw[0], box, height=37, width=53)
    want = np.zeros((37, 53), dtype=bool)
    if rows is not None and cols is not None:
        want[rows[0] : rows[1], cols[0] : cols[1]] = True
    assert mask.shape == (37, 53) and mask.dtype == bool
    np.testing.assert_array_equal(mask, want)


def test_paste_keeps_the_mask_geometry_inside_the_box() -> None:
    raw = -np.ones((64, 64), dtype=np.float32)
    raw[:, :32] = 1.0  # left half of the box
    mask = paste_mask(raw, (10.0, 2.0, 30.0, 35.0), height=37, width=53)
    want = np.zeros((37, 53), dtype=bool)
    want[2:35, 10:20] = True
    np.testing.assert_array_equal(mask, want)


def test_paste_masks_batches_and_checks_lengths() -> None:
    raw = np.ones((2, 64, 64), dtype=np.float32)
    out = paste_masks(raw, [(0, 0, 5, 5), (10, 10, 20, 20)], height=37, width=53)
    assert out.shape == (2, 37, 53) and out[0].sum() == 25 and out[1].sum() == 100
    with pytest.raises(ValueError, match="one box per mask"):
        paste_masks(raw, [(0, 0, 5, 5)], height=37, width=53)


# --- RLE ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])  # empty, random, full
def test_rle_round_trip(density: float) -> None:
    from pycocotools import mask as mask_utils

    mask = np.random.default_rng(0).random((37, 53)) < density
    rle = mask_to_rle(mask)
    assert rle["size"] == [37, 53] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    # pycocotools itself reads it back (counts as bytes) to the same area
    assert mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}) == mask.sum()


# --- training targets ---------------------------------------------------------------------------------------------


def test_crop_to_box_resizes_to_64_and_treats_outside_as_background() -> None:
    full = np.ones((37, 53), dtype=bool)
    np.testing.assert_allclose(crop_to_box(full, (3, 4, 40, 30)).numpy(), 1.0, atol=1e-6)
    half_out = crop_to_box(full, (-53.0, 0.0, 53.0, 37.0))  # left half of the box is outside the image
    assert half_out.shape == (64, 64)
    assert half_out[:, :30].max() == 0.0 and half_out[:, 34:].min() == pytest.approx(1.0)


def reference_encode(weights: dict[str, np.ndarray], masks: torch.Tensor, kernel: int) -> torch.Tensor:
    """big_vision's encoder (TF 'SAME' padding) with functional calls; the padding is spelled out per kernel."""
    w = {k: torch.from_numpy(v) for k, v in weights.items()}
    stride2_pad = {4: (1, 1, 1, 1), 3: (0, 1, 0, 1)}[kernel]  # SAME on a 64/32/16/8 input, stride 2
    x = 2.0 * masks[:, None] - 1.0
    for i in (0, 2, 4, 6):
        x = F.relu(F.conv2d(F.pad(x, stride2_pad), w[f"encoder.{i}.weight"], w[f"encoder.{i}.bias"], stride=2))
    for block in ("encoder.8.net", "encoder.9.net"):
        h = F.relu(F.conv2d(x, w[f"{block}.0.weight"], w[f"{block}.0.bias"], padding=1))
        h = F.relu(F.conv2d(h, w[f"{block}.2.weight"], w[f"{block}.2.bias"], padding=1))
        x = x + F.conv2d(h, w[f"{block}.4.weight"], w[f"{block}.4.bias"])
    z = F.conv2d(x, w["encoder.10.weight"], w["encoder.10.bias"])  # N, D, 4, 4
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    distances = ((flat[:, None, :] - w["_vq_vae._embedding"][None]) ** 2).sum(-1)
    return distances.argmin(1).reshape(-1, 16)


@pytest.mark.parametrize("kernel", [4, 3])  # even kernel pads both sides, odd kernel pads bottom/right only
def test_encoder_matches_reference(tmp_path: Path, kernel: int) -> None:
    path = write_random_vae_npz(tmp_path / "vae.npz", codebook_dim=8, encoder_kernel=kernel)
    masks = (torch.rand(6, 64, 64, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    got = MaskEncoder.from_npz(path).encode(masks)
    assert got.shape == (6, 16) and got.dtype == torch.int64
    assert torch.equal(got, reference_encode(load(Path(path)), masks, kernel))


def test_encoder_rejects_masks_that_are_not_64x64(vae_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(N, 64, 64\)"):
        MaskEncoder.from_npz(vae_path).encode(np.zeros((1, 32, 32)))
