"""Raising a checkpoint's input resolution, the way PaliGemma's own 448 and 896 px checkpoints were made from
the 224 px ones: the same weights, with the vision tower's learned position embeddings resized to the finer grid.

The patch size stays, so a 448 px input at 32 px patches has 196 image tokens where 224 px had 49: every patch
covers a quarter of the area it covered before, which is what small objects and text need. The position
embeddings form a square grid of vectors; they are resized as an image would be (bicubic, corners aligned), so
that each new patch starts with the position of the place it covers.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from model.image_processing import ImageProcessor
from model.paligemma import PaliGemma


def resize_positions(table: torch.Tensor, grid: int) -> torch.Tensor:
    """Position embeddings [g*g, C] of a g x g grid -> [grid*grid, C], bicubically resized."""
    old = int(round(table.shape[0] ** 0.5))
    if old * old != table.shape[0]:
        raise ValueError(f"expected a square grid of position embeddings but got {table.shape[0]}")
    if old == grid:
        return table.clone()
    image = table.float().T.reshape(1, -1, old, old)  # 1, C, g, g
    resized = F.interpolate(image, size=(grid, grid), mode="bicubic", align_corners=True)
    return resized.reshape(-1, grid * grid).T.to(table.dtype).contiguous()


def with_image_size(model: PaliGemma, image_size: int) -> PaliGemma:
    """A copy of `model` that takes `image_size` px images (same patch size, more patches); weights shared
    but for the resized position embeddings."""
    vision = model.config.vision
    if image_size % vision.patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size {vision.patch_size}")
    if image_size == vision.image_size:
        return model
    config = model.config.replace(vision=dataclasses.replace(vision, image_size=image_size))
    processor = model.image_processor
    new_processor = (
        ImageProcessor(size=image_size)
        if processor is None
        else dataclasses.replace(processor, size=image_size)  # mean, std and rescale stay the checkpoint's
    )
    bigger = PaliGemma(config, model.tokenizer, new_processor)
    state = model.state_dict()
    key = "vision_tower.embeddings.position_embedding.weight"
    state[key] = resize_positions(state[key], image_size // vision.patch_size)
    bigger.load_state_dict(state, strict=True)
    return bigger.to(model.dtype)
