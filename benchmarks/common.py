"""What the benchmarks share: the hardware they ran on, and random weights of a named size.

Random weights are written with our own `save_pretrained` and loaded by both our model and transformers from
that folder; the tests prove both read the same weights alike, so the benchmark compares like with like.
"""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path

import torch

from model import ImageProcessor, PaliGemma, PaliGemmaConfig, PromptTokenizer
from model.saving import save_pretrained
from model.sizes import SIZES
from training.vocab import WORDS, build_tokenizer


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_model(config: PaliGemmaConfig | str, dtype: torch.dtype = torch.float32, seed: int = 0) -> PaliGemma:
    """A model of a named size with random weights: matrices N(0, 1/fan_in), norms and biases perturbed (so that
    no formula hides behind a zero), embeddings N(0, 0.02); with a tokenizer in PaliGemma's layout."""
    if isinstance(config, str):
        config = SIZES[config]
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = PaliGemma(config)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1, generator=gen)
            elif p.ndim == 1:  # LayerNorm multiplies by w (around 1), Gemma's RMSNorm by 1 + w (w around 0)
                p.normal_(1.0 if name.startswith("vision_tower") else 0.0, 0.1, generator=gen)
            elif "embed_tokens" in name:
                p.normal_(0.0, 0.02, generator=gen)
            else:
                p.normal_(0.0, p[0].numel() ** -0.5, generator=gen)
    model = model.to(dtype)
    model.tokenizer = PromptTokenizer(build_tokenizer(config.image_token_id - 1152, WORDS))
    model.image_processor = ImageProcessor(size=config.vision.image_size)
    return model.eval()


def random_checkpoint(
    folder: str | Path, size: PaliGemmaConfig | str, dtype: torch.dtype = torch.float32, image_size: int | None = None
) -> Path:
    """Random weights of a named size saved as a checkpoint; `image_size` changes only the resolution (448 and 896
    px are the same network with more image tokens)."""
    config = SIZES[size] if isinstance(size, str) else size
    if image_size is not None:
        config = dataclasses.replace(config, vision=dataclasses.replace(config.vision, image_size=image_size))
    return save_pretrained(random_model(config, dtype), folder)
