"""Our PyTorch PaliGemma (1 and 2): SigLIP vision tower, linear projector, Gemma / Gemma 2 decoder.

The names below load on first use, so that the plain-Python parts of the engine (`model.sequence`,
`model.scheduler`) import without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import CheckpointError, PaliGemmaConfig, TextConfig, VisionConfig
    from .generation import Generation
    from .image_processing import ImageProcessor
    from .paligemma import PaliGemma
    from .tokenizer import PromptTokenizer

_WHERE = {
    "CheckpointError": "config",
    "PaliGemmaConfig": "config",
    "TextConfig": "config",
    "VisionConfig": "config",
    "Generation": "generation",
    "ImageProcessor": "image_processing",
    "PaliGemma": "paligemma",
    "PromptTokenizer": "tokenizer",
}

__all__ = [
    "CheckpointError",
    "Generation",
    "ImageProcessor",
    "PaliGemma",
    "PaliGemmaConfig",
    "PromptTokenizer",
    "TextConfig",
    "VisionConfig",
]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
