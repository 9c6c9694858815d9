"""Time our generate against transformers' on the same weights, in one process, interleaved.

    python -m jobs.bench --size mid --batch 8 --new-tokens 32
    python -m jobs.bench --size pg1-3b --dtype bf16 --device cuda --batch 32 64
    python -m jobs.bench --checkpoint DIR --batch 8

Both models get the same token ids and pixel values and generate exactly --new-tokens tokens (end-of-sequence
is ignored, so the amount of work is fixed); warm-up runs are excluded and the median of --repeats timed runs is
reported. Random weights come from a named size written by transformers' own save_pretrained.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model import PaliGemma
from model.config import SIZES
from model.loading import resolve_dtype


@dataclass
class Row:
    size: str
    device: str
    dtype: str
    batch: int
    prompt_tokens: int
    new_tokens: int
    ours_s: float
    transformers_s: float
    ours_images_per_s: float
    transformers_images_per_s: float
    ours_tokens_per_s: float
    transformers_tokens_per_s: float
    speedup: float
    same_tokens: bool


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_images(n: int, seed: int = 0) -> list[Image.Image]:
    """Photographs from scikit-image when it is installed, random noise otherwise; sizes vary like real data."""
    try:
        from skimage import data

        photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    except ImportError:
        rng = np.random.default_rng(seed)
        photos = [rng.integers(0, 256, (300 + 20 * i, 400, 3), dtype=np.uint8) for i in range(4)]
    return [Image.fromarray(photos[i % len(photos)]) for i in range(n)]


def time_call(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def bench(ours: PaliGemma, hf, size: str, batch: int, prompt: str, new_tokens: int, repeats: int, warmup: int) -> Row:
    device = ours.device
    images = sample_images(batch)
    tok = ours.tokenizer
    input_ids, valid = tok.batch([prompt] * batch, ours.config.num_image_tokens)
    hf.generation_config.eos_token_id = None  # a fixed amount of work for both
    results: dict[str, list] = {}

    def run_ours():
        results["ours"] = ours.generate(
            images, [prompt] * batch, max_new_tokens=new_tokens, return_logprobs=True, stop_at_eos=False
        )

    def run_hf():
        # The same work as our generate does: preprocess the images and prompts, generate, decode the text.
        ids, mask = tok.batch([prompt] * batch, ours.config.num_image_tokens)
        with torch.inference_mode():
            out = hf.generate(
                input_ids=ids.to(device),
                attention_mask=mask.long().to(device),
                token_type_ids=torch.zeros_like(ids).to(device),
                pixel_values=ours.image_processor(images).to(device, ours.dtype),
                max_new_tokens=new_tokens,
                do_sample=False,
            )
        results["hf"] = out
        results["hf_text"] = [tok.decode(row) for row in out[:, ids.shape[1] :].tolist()]

    for _ in range(warmup):
        run_ours()
        run_hf()
    ours_t, hf_t = [], []
    for _ in range(repeats):  # interleaved, so drifting clocks or thermal state hit both alike
        ours_t.append(time_call(run_ours, device))
        hf_t.append(time_call(run_hf, device))
    ours_s, hf_s = statistics.median(ours_t), statistics.median(hf_t)
    hf_ids = results["hf"][:, input_ids.shape[1] :].tolist()
    same = all(g.token_ids == h for g, h in zip(results["ours"], hf_ids, strict=True))
    return Row(
        size=size,
        device=device_name(device),
        dtype=str(ours.dtype).removeprefix("torch."),
        batch=batch,
        prompt_tokens=input_ids.shape[1],
        new_tokens=new_tokens,
        ours_s=round(ours_s, 4),
        transformers_s=round(hf_s, 4),
        ours_images_per_s=round(batch / ours_s, 2),
        transformers_images_per_s=round(batch / hf_s, 2),
        ours_tokens_per_s=round(batch * new_tokens / ours_s, 1),
        transformers_tokens_per_s=round(batch * new_tokens / hf_s, 1),
        speedup=round(hf_s / ours_s, 2),
        same_tokens=same,
    )


def load_pair(args, folder: Path):
    from transformers import PaliGemmaForConditionalGeneration

    dtype = resolve_dtype(args.dtype)
    ours = PaliGemma.from_pretrained(folder, dtype=dtype, device=args.device)
    hf = PaliGemmaForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(args.device).eval()
    return ours, hf


def main(argv: list[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="mid", choices=sorted(SIZES), help="random weights of a named size")
    p.add_argument("--checkpoint", type=Path, help="a checkpoint folder instead of random weights")
    p.add_argument("--batch", type=int, nargs="+", default=[8], help="one or more batch sizes")
    p.add_argument("--prompt", default="caption en")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the rows here as JSON")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder, name = args.checkpoint, str(args.checkpoint)
        if folder is None:
            from model.random_checkpoint import write_random_checkpoint

            folder, name = Path(tmp), args.size
            write_random_checkpoint(folder, args.size, dtype=resolve_dtype(args.dtype))
        ours, hf = load_pair(args, folder)
        rows = [bench(ours, hf, name, b, args.prompt, args.new_tokens, args.repeats, args.warmup) for b in args.batch]

    header = f"{'size':>8} {'device':>28} {'dtype':>9} {'batch':>5} {'ours img/s':>10} {'hf img/s':>9} "
    header += f"{'ours tok/s':>10} {'hf tok/s':>9} {'speedup':>7} {'same':>5}"
    print(header)
    for r in rows:
        print(
            f"{r.size:>8} {r.device[:28]:>28} {r.dtype:>9} {r.batch:>5} {r.ours_images_per_s:>10} "
            f"{r.transformers_images_per_s:>9} {r.ours_tokens_per_s:>10} {r.transformers_tokens_per_s:>9} "
            f"{r.speedup:>6}x {str(r.same_tokens):>5}"
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return rows


if __name__ == "__main__":
    main()
