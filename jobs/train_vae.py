"""Train the mask VQ-VAE on the shapes' masks and write it in the `vae-oid.npz` layout.

    python -m jobs.train_vae --output checkpoints/paligemma-shapes/vae.npz --seed 0 --steps 600

Prints the held-out mask IoU after encoding and decoding (the ceiling segmentation can reach with these codes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.train_vae`: train the mask VQ-VAE on the shapes' masks and save it."""
    p = argparse.ArgumentParser(prog="python -m jobs.train_vae", description=__doc__.split("\n")[0])
    p.add_argument("--output", required=True, help="the .npz file to write")
    p.add_argument("--seed", type=int, default=0, help="data and initialization seed (default 0)")
    p.add_argument("--steps", type=int, default=600, help="optimizer steps (default 600)")
    p.add_argument("--scenes", type=int, default=2000, help="scenes whose masks make the training set (default 2000)")
    p.add_argument("--codebook-dim", type=int, default=32, help="codebook width D (default 32; the released is 512)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)
    from training.vqvae import VaeTrainConfig, save_vae_npz, train_vqvae

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = VaeTrainConfig(seed=args.seed, steps=args.steps, num_scenes=args.scenes, codebook_dim=args.codebook_dim)
    result = train_vqvae(cfg)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    save_vae_npz(args.output, result.encoder, result.decoder)
    print(
        f"wrote {args.output}: held-out mask IoU {result.mask_iou:.4f}, {result.codes_used} codes in use, "
        f"{result.seconds:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
