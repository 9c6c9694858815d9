"""The VQ-VAE that turns PaliGemma's 16 `<seg>` codes into a 64x64 mask, and masks into codes (docs/FORMATS.md).

The weights are big_vision's `vae-oid.npz`, a PyTorch checkpoint saved as numpy arrays in PyTorch layout
(conv: out, in, kh, kw; transposed conv: in, out, kh, kw). Module names below mirror the file's keys
(`decoder.4.weight` is `self.decoder[4].weight`, `_vq_vae._embedding` is the codebook), so loading needs no key
map: every key the module has is read from the file and its shape checked; other keys (the encoder's, EMA
statistics) are ignored. Legend for shapes: N masks, D codebook width (512 in the released file), C channels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NUM_CODES = 128
CODES_PER_MASK = 16  # a 4x4 grid in raster order
MASK_SIZE = 64
CODEBOOK_KEY = "_vq_vae._embedding"


class ResBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(conv3x3(x))))); no ReLU after the add, as in the checkpoint's model."""

    def __init__(self, channels: int, conv: type[nn.Conv2d] = nn.Conv2d) -> None:
        super().__init__()
        self.net = nn.Sequential(
            conv(channels, channels, 3, padding=1),
            nn.ReLU(),
            conv(channels, channels, 3, padding=1),
            nn.ReLU(),
            conv(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Codebook(nn.Module):
    """Holds the [128, D] codebook under the checkpoint's name `_embedding`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("_embedding", torch.zeros(NUM_CODES, dim))


class MaskDecoder(nn.Module):
    """codes int[N, 16] -> raw float[N, 64, 64]; a pixel belongs to the mask where the output is > 0.

    The network was trained toward 2*mask - 1, so there is no final activation and the threshold is 0.
    """

    def __init__(self, codebook_dim: int = 512) -> None:
        super().__init__()
        self._vq_vae = Codebook(codebook_dim)
        self.decoder = nn.Sequential(
            nn.Conv2d(codebook_dim, 128, 1),  # 0
            nn.ReLU(),
            ResBlock(128),  # 2
            ResBlock(128),  # 3
            nn.ConvTranspose2d(128, 128, 4, stride=2, padding=1),  # 4: 4x4 -> 8x8
            nn.ReLU(),
            nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1),  # 6: -> 16x16
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),  # 8: -> 32x32
            nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1),  # 10: -> 64x64
            nn.ReLU(),
            nn.Conv2d(16, 1, 1),  # 12
        )

    @classmethod
    def from_npz(cls, path: str | os.PathLike, device: torch.device | str | None = None) -> MaskDecoder:
        """Load the decoder half of a `vae-oid.npz`; the codebook width D is read from the file."""
        with np.load(path, allow_pickle=False) as npz:
            dim = _array(npz, path, CODEBOOK_KEY, ndim=2).shape[1]
            module = cls(dim)
            _load_checked(module, npz, path)
        return module.to(device) if device is not None else module

    @property
    def device(self) -> torch.device:
        return self._vq_vae._embedding.device

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor | np.ndarray) -> torch.Tensor:
        """codes int[N, 16] in 0..127 -> float[N, 64, 64] on this module's device (raw output, threshold at 0)."""
        codes = torch.as_tensor(np.asarray(codes) if not torch.is_tensor(codes) else codes)
        if codes.ndim != 2 or codes.shape[1] != CODES_PER_MASK:
            raise ValueError(f"expected codes of shape (N, {CODES_PER_MASK}) but got {tuple(codes.shape)}")
        if codes.is_floating_point() or codes.is_complex():
            raise ValueError(f"expected integer codes but got dtype {codes.dtype}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= NUM_CODES):
            raise ValueError(f"expected codes in 0..{NUM_CODES - 1} but got {codes.min()}..{codes.max()}")
        codebook = self._vq_vae._embedding
        x = codebook[codes.to(codebook.device, torch.long)]  # N, 16, D
        x = x.reshape(-1, 4, 4, codebook.shape[1]).permute(0, 3, 1, 2)  # N, D, 4, 4 (raster order)
        return self.decoder(x)[:, 0]  # N, 64, 64


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's 'SAME' padding (extra pixel at the bottom/right), as big_vision runs the encoder.

    The `padding` argument is ignored: the padding follows from the input size, kernel and stride.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride)


class MaskEncoder(nn.Module):
    """masks float[N, 64, 64] in [0, 1] -> codes int[N, 16]: the direction used to build segmentation targets.

    Four stride-2 convs + ReLU, two residual blocks, a final conv to D, then the nearest codebook entry per cell.
    Channel widths and kernel sizes are read from the file (the format fixes only the decoder's).
    """

    def __init__(self, channels: tuple[int, ...], kernels: tuple[int, ...], codebook_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c, k in zip(channels, kernels, strict=True):  # encoder.0, .2, .4, .6
            layers += [SameConv2d(c_in, c, k, stride=2, padding=0), nn.ReLU()]
            c_in = c
        layers += [ResBlock(c_in, SameConv2d), ResBlock(c_in, SameConv2d)]  # encoder.8, .9
        layers.append(SameConv2d(c_in, codebook_dim, 1, padding=0))  # encoder.10
        self.encoder = nn.Sequential(*layers)
        self._vq_vae = Codebook(codebook_dim)

    @classmethod
    def from_npz(cls, path: str | os.PathLike, device: torch.device | str | None = None) -> MaskEncoder:
        """Load the encoder half of a `vae-oid.npz`."""
        with np.load(path, allow_pickle=False) as npz:
            dim = _array(npz, path, CODEBOOK_KEY, ndim=2).shape[1]
            convs = [_array(npz, path, f"encoder.{i}.weight", ndim=4) for i in (0, 2, 4, 6)]
            module = cls(tuple(w.shape[0] for w in convs), tuple(w.shape[2] for w in convs), dim)
            _load_checked(module, npz, path)
        return module.to(device) if device is not None else module

    @torch.inference_mode()
    def encode(self, masks: torch.Tensor | np.ndarray) -> torch.Tensor:
        """masks float[N, 64, 64] in [0, 1] (crop + resize with `decoders.masks.crop_to_box`) -> int64[N, 16]."""
        codebook = self._vq_vae._embedding
        x = torch.as_tensor(np.asarray(masks) if not torch.is_tensor(masks) else masks)
        if x.ndim != 3 or tuple(x.shape[1:]) != (MASK_SIZE, MASK_SIZE):
            raise ValueError(f"expected masks of shape (N, {MASK_SIZE}, {MASK_SIZE}) but got {tuple(x.shape)}")
        x = 2.0 * x.to(codebook.device, torch.float32)[:, None] - 1.0  # [0, 1] -> [-1, 1]
        z = self.encoder(x)  # N, D, 4, 4
        if tuple(z.shape[2:]) != (4, 4):
            raise ValueError(f"expected a 4x4 encoder grid but got {tuple(z.shape[2:])}: check the encoder strides")
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # N*16, D (raster order)
        # Direct differences rather than the |a|^2 + |b|^2 - 2ab shortcut, whose rounding can flip near-ties.
        distances = torch.cdist(flat, codebook, compute_mode="donot_use_mm_for_euclid_dist")
        return distances.argmin(dim=1).reshape(-1, CODES_PER_MASK)


def _array(npz: Mapping[str, np.ndarray], path: str | os.PathLike, key: str, ndim: int) -> np.ndarray:
    if key not in npz:
        raise KeyError(f"{os.fspath(path)}: missing key {key!r}")
    value = npz[key]
    if value.ndim != ndim:
        raise ValueError(f"{os.fspath(path)}: expected {key!r} with {ndim} dimensions but got shape {value.shape}")
    return value


def _load_checked(module: nn.Module, npz: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Copy every tensor of `module` from the npz by name, checking presence and shape; other keys are ignored."""
    state = {}
    for key, expected in module.state_dict().items():
        value = _array(npz, path, key, ndim=expected.ndim)
        if tuple(value.shape) != tuple(expected.shape):
            raise ValueError(
                f"{os.fspath(path)}: expected {key!r} of shape {tuple(expected.shape)} but got {tuple(value.shape)}"
            )
        state[key] = torch.from_numpy(np.asarray(value, dtype=np.float32))
    module.load_state_dict(state, strict=True)
