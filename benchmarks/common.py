"""What the benchmarks share: the hardware they ran on, timing, sample inputs, and random weights of a named size.

Random weights are written with our own `save_pretrained` and loaded by both our model and transformers from
that folder; the tests prove both read the same weights alike, so the benchmark compares like with like. Nothing
here imports Ray: the GPU suite (benchmarks/gpu.py) runs where Ray is not installed.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model import ImageProcessor, PaliGemma, PaliGemmaConfig, PromptTokenizer
from model.saving import save_pretrained
from model.sizes import SIZES
from training.vocab import WORDS, build_tokenizer


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo), which the rows of docs/PERFORMANCE.md are labelled with."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    """The vector units that decide which CPU kernels are fast: AMX, AVX-512 (with bf16), AVX2, or NEON."""
    try:
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        return platform.machine()
    names = [("amx_bf16", "AMX-bf16"), ("avx512_bf16", "AVX-512 bf16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"),
             ("asimd", "NEON")]  # fmt: skip
    found = [label for flag, label in names if flag in flags]
    return ", ".join(found) or platform.machine()


def device_name(device: torch.device) -> str:
    """The device as the benchmark rows name it: the GPU's name, or the CPU's with its vector units and threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({cpu_flags()}), {torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer read after it measures that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """The median wall time of `fn` over `repeats` calls after `warmup` untimed ones, the device synchronized."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sample_images(n: int, seed: int = 0) -> list[Image.Image]:
    """n different images (photographs from scikit-image when it is installed, random noise otherwise), each
    cropped differently: no two rows share an image, so neither side saves a vision pass."""
    try:
        from skimage import data

        photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    except ImportError:
        rng = np.random.default_rng(seed)
        photos = [rng.integers(0, 256, (300 + 20 * i, 400, 3), dtype=np.uint8) for i in range(4)]
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        shift = 3 * (i // len(photos))
        out.append(Image.fromarray(photo[shift:, shift:]))
    return out


def hf_generate(hf, ours: PaliGemma, images, prompts, max_new_tokens: int, stop_at_eos: bool) -> list[list[int]]:
    """transformers' generate on the same token ids and pixels as ours (our tokenizer and image processor).

    With stop_at_eos=False every row runs max_new_tokens steps (`hf.generation_config.eos_token_id` must be None
    as well, which the callers set once)."""
    tok, device = ours.tokenizer, ours.device
    ids, mask = tok.batch(prompts, ours.config.num_image_tokens)
    with torch.inference_mode():
        out = hf.generate(
            input_ids=ids.to(device),
            attention_mask=mask.long().to(device),
            token_type_ids=torch.zeros_like(ids).to(device),
            pixel_values=ours.image_processor(images).to(device, ours.dtype),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tok.eos_id if stop_at_eos else None,
            pad_token_id=tok.pad_id,
        )
    rows = out[:, ids.shape[1] :].tolist()
    if stop_at_eos:  # after its <eos> a row holds padding: keep what our generate returns
        rows = [r[: r.index(tok.eos_id)] if tok.eos_id in r else r for r in rows]
    [tok.decode(r) for r in rows]  # the same text decoding work as ours
    return rows


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights in place: matrices N(0, 1/fan_in), norms and biases perturbed (so that no formula hides
    behind a zero), embeddings N(0, 0.02). Works on our names and transformers' alike (vision norms are LayerNorms
    around 1; Gemma's RMSNorm multiplies by 1 + w, around 0)."""
    device = next(module.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1, generator=gen)
            elif p.ndim == 1:
                p.normal_(1.0 if "vision_tower" in name else 0.0, 0.1, generator=gen)
            elif "embed_tokens" in name:
                p.normal_(0.0, 0.02, generator=gen)
            else:
                p.normal_(0.0, p[0].numel() ** -0.5, generator=gen)


def prompt_tokenizer(config: PaliGemmaConfig) -> PromptTokenizer:
    """A tokenizer in PaliGemma's layout for this config's ids (Gemma's 256,000 text ids for the released sizes)."""
    return PromptTokenizer(build_tokenizer(config.image_token_id - 1152, WORDS))


def random_model(config: PaliGemmaConfig | str, dtype: torch.dtype = torch.float32, seed: int = 0) -> PaliGemma:
    """A model of a named size with random weights (`randomize_`), with a tokenizer in PaliGemma's layout."""
    if isinstance(config, str):
        config = SIZES[config]
    with torch.device("meta"):
        model = PaliGemma(config)
    model = model.to_empty(device="cpu")
    randomize_(model, seed)
    model = model.to(dtype)
    model.tokenizer = prompt_tokenizer(config)
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
