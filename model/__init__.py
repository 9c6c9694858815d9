"""Our PyTorch PaliGemma (1 and 2): SigLIP vision tower, linear projector, Gemma / Gemma 2 decoder."""

from .config import CheckpointError, PaliGemmaConfig, TextConfig, VisionConfig
from .generation import Generation
from .image_processing import ImageProcessor
from .paligemma import PaliGemma
from .tokenizer import PromptTokenizer

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
