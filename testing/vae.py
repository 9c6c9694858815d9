"""A random checkpoint in big_vision's `vae-oid.npz` layout, for tests that need a mask decoder."""

from __future__ import annotations

import os

import numpy as np

from decoders.vqvae import CODEBOOK_KEY, MaskDecoder, MaskEncoder

# Decoder keys holding ordinary convs (out, in, kh, kw); the other decoder weights are transposed convs (in, out, ...).
_CONVS = {"decoder.0.weight", "decoder.12.weight"} | {f"decoder.{b}.net.{i}.weight" for b in (2, 3) for i in (0, 2, 4)}


def write_random_vae_npz(
    path: str | os.PathLike,
    codebook_dim: int = 512,
    encoder_channels: tuple[int, ...] = (16, 32, 64, 128),
    encoder_kernel: int = 4,
    seed: int = 0,
) -> str:
    """Write encoder, decoder and codebook keys with random values (the real file's shapes at D=512).

    Returns the path. A small `codebook_dim` (e.g. 8) keeps tests fast; the decoder widths are fixed by the format.
    """
    decoder = MaskDecoder(codebook_dim)
    encoder = MaskEncoder(encoder_channels, (encoder_kernel,) * len(encoder_channels), codebook_dim)
    shapes = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    shapes.update({k: tuple(v.shape) for k, v in decoder.state_dict().items()})
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, shape in shapes.items():
        if key == CODEBOOK_KEY:
            std = 1.0
        elif key.endswith(".bias"):
            std = 0.1
        else:
            # He init, so that a signal neither dies nor explodes through the ReLU stack and the raw mask has both
            # signs; a transposed conv with stride 2 sums a quarter of its taps per output pixel.
            fan_in = shape[1] * shape[2] * shape[3] if key.startswith("encoder") or key in _CONVS else None
            fan_in = fan_in or shape[0] * shape[2] * shape[3] / 4
            std = (2.0 / fan_in) ** 0.5
        arrays[key] = rng.normal(0.0, std, size=shape).astype(np.float32)
    np.savez(path, **arrays)
    return os.fspath(path)
