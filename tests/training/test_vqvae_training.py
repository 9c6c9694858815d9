"""The mask VQ-VAE trainer writes files the released-format loaders read, and the bundled one reconstructs shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from decoders import MaskDecoder, MaskEncoder
from training.vqvae import VaeTrainConfig, _iou, save_vae_npz, shape_crops, train_vqvae

BUNDLED = Path(__file__).resolve().parents[2] / "checkpoints" / "paligemma-shapes" / "vae.npz"


def test_trained_vae_round_trips_through_the_vae_oid_layout(tmp_path):
    cfg = VaeTrainConfig(steps=30, num_scenes=40, batch_size=16, codebook_dim=8)
    logs: list[str] = []
    result = train_vqvae(cfg, log=logs.append)
    first, last = (float(line.split("reconstruction ")[1].split()[0]) for line in (logs[0], logs[-1]))
    assert last < first  # it learns
    path = save_vae_npz(tmp_path / "vae.npz", result.encoder, result.decoder)
    keys = set(np.load(path).files)
    assert "_vq_vae._embedding" in keys and "decoder.12.weight" in keys and "encoder.0.weight" in keys
    crops = shape_crops(seed=5, num_scenes=4)
    encoder, decoder = MaskEncoder.from_npz(path), MaskDecoder.from_npz(path)
    codes = encoder.encode(crops)
    assert codes.shape == (len(crops), 16) and codes.max() < 128
    torch.testing.assert_close(decoder.decode(codes), result.decoder.decode(result.encoder.encode(crops)))


def test_bundled_vae_reconstructs_held_out_shape_masks():
    crops = shape_crops(seed=999, num_scenes=40)
    encoder, decoder = MaskEncoder.from_npz(BUNDLED), MaskDecoder.from_npz(BUNDLED)
    assert _iou(decoder.decode(encoder.encode(crops)), crops) >= 0.95
