"""Train the mask VQ-VAE (docs/FORMATS.md, "Masks") on the shapes' masks and save it in big_vision's `vae-oid.npz`
layout.

The decoder is exactly `decoders.MaskDecoder` (its widths are fixed by the released checkpoint); the encoder is
`decoders.MaskEncoder` with four stride-2 4x4 convs. Both share one codebook of 128 entries. Training is the
classic VQ-VAE recipe: reconstruct 2*mask - 1 with a straight-through estimator, pull the codebook toward the
encoder outputs and the outputs toward the codebook (commitment 0.25), and re-seed codes nobody uses from
random encoder outputs so that all 128 stay alive. The saved file loads with `MaskDecoder.from_npz` and
`MaskEncoder.from_npz` like the released one, so segmentation targets and predictions go through the same code.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from decoders.masks import crop_to_box
from decoders.vqvae import NUM_CODES, MaskDecoder, MaskEncoder

from .shapes import draw_scene


@dataclass(frozen=True)
class VaeTrainConfig:
    seed: int = 0
    codebook_dim: int = 32
    encoder_channels: tuple[int, ...] = (16, 32, 64, 128)
    num_scenes: int = 6000
    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    commitment: float = 0.25


@dataclass
class VaeTrainResult:
    encoder: MaskEncoder
    decoder: MaskDecoder
    mask_iou: float  # mean IoU of decoded vs input masks (threshold 0) on held-out crops
    codes_used: int
    seconds: float


def shape_crops(seed: int, num_scenes: int) -> torch.Tensor:
    """float[N, 64, 64] masks of every object of `num_scenes` scenes, cropped to their boxes."""
    rng = np.random.default_rng(seed)
    crops = [crop_to_box(s.mask, s.box) for _ in range(num_scenes) for s in draw_scene(rng)[1]]
    return torch.stack(crops)


def _quantize(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    codes = torch.cdist(flat, codebook).argmin(1)
    zq = codebook[codes].reshape(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
    return zq, codes


def _iou(raw: torch.Tensor, masks: torch.Tensor) -> float:
    pred, gt = raw > 0, masks > 0.5
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float().clamp(min=1)
    return float((inter / union).mean())


def train_vqvae(cfg: VaeTrainConfig, log=print) -> VaeTrainResult:
    with torch.enable_grad():  # whatever the caller's grad mode (a UI or a notebook may have turned it off)
        return _train_vqvae(cfg, log)


def _train_vqvae(cfg: VaeTrainConfig, log) -> VaeTrainResult:
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    data = shape_crops(cfg.seed, cfg.num_scenes)
    held_out = shape_crops(cfg.seed + 10_000, 300)
    encoder = MaskEncoder(cfg.encoder_channels, (4,) * len(cfg.encoder_channels), cfg.codebook_dim)
    decoder = MaskDecoder(cfg.codebook_dim)
    codebook = torch.nn.Parameter(torch.randn(NUM_CODES, cfg.codebook_dim) * 0.1)
    params = [*encoder.encoder.parameters(), *decoder.decoder.parameters(), codebook]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    usage = torch.zeros(NUM_CODES)
    for step in range(cfg.steps):
        batch = data[torch.randint(len(data), (cfg.batch_size,), generator=gen)]
        z = encoder.encoder(2 * batch[:, None] - 1)
        zq, codes = _quantize(z, codebook)
        raw = decoder.decoder(z + (zq - z).detach())[:, 0]
        recon = F.mse_loss(raw, 2 * batch - 1)
        vq = F.mse_loss(zq, z.detach()) + cfg.commitment * F.mse_loss(z, zq.detach())
        opt.zero_grad(set_to_none=True)
        (recon + vq).backward()
        opt.step()
        usage = 0.99 * usage + torch.bincount(codes, minlength=NUM_CODES).float()
        if step % 100 == 99 and step < cfg.steps * 0.8:  # re-seed dead codes from this batch's encoder outputs
            dead = (usage < 1e-3).nonzero().flatten()
            if len(dead):
                flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
                with torch.no_grad():
                    codebook[dead] = flat[torch.randint(len(flat), (len(dead),), generator=gen)]
                usage[dead] = 1.0
        if step % 250 == 0 or step == cfg.steps - 1:
            log(f"vae step {step}: reconstruction {recon.item():.4f}  vq {vq.item():.4f}")
    with torch.no_grad():
        encoder._vq_vae._embedding.copy_(codebook)
        decoder._vq_vae._embedding.copy_(codebook)
    codes = encoder.encode(held_out)
    iou = _iou(decoder.decode(codes), held_out)
    used = int(torch.unique(encoder.encode(data[:5000])).numel())
    return VaeTrainResult(encoder, decoder, iou, used, time.perf_counter() - start)


def save_vae_npz(path: str | os.PathLike, encoder: MaskEncoder, decoder: MaskDecoder) -> str:
    """Write encoder, decoder and codebook under the released file's key names (float32, PyTorch layout)."""
    arrays = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in encoder.state_dict().items()}
    arrays.update({k: v.detach().cpu().numpy().astype(np.float32) for k, v in decoder.state_dict().items()})
    np.savez(path, **arrays)
    return os.fspath(path)
