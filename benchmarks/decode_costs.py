"""Where generation's time goes on this machine: memory bandwidth, the decode step's matrix products, one step,
a prefill and the vision tower, each timed alone (medians).

    python -m benchmarks.decode_costs [--size mid] [--batch 8] [--compile] [--json out.json]

A decode step multiplies a few rows by every weight of the text decoder, so its floor is the time to read those
weights once. This prints how fast plain streaming reads memory here, how fast the step's matrix products read
their weights (row-major [out, in] as stored, and column-major as `PaliGemma.column_major_weights` keeps them on a
CPU), and how long a whole step, a prefill and the tower take, so a reader can see which of them bounds the step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.common import device_name, random_model, synchronize
from model.attention import CacheWrite


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
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


def streaming_gb_per_s(device: torch.device, mib: int = 512) -> float:
    """Read bandwidth of a plain reduction over a buffer far larger than the caches."""
    x = torch.ones(mib * 2**20 // 4, device=device)
    return x.numel() * 4 / median_seconds(lambda: x.sum(), device, 5) / 1e9


def weight_read_gb_per_s(model, batch: int, column_major: bool) -> float:
    """Weight bytes read per second by the text decoder's matrix products at `batch` rows (one decode step's)."""
    weights = [m.weight.detach() for m in model.language_model.modules() if isinstance(m, nn.Linear)]
    if column_major:
        weights = [w.t().contiguous().t() for w in weights]
    inputs = {w.shape[1]: torch.randn(batch, w.shape[1], device=w.device, dtype=w.dtype) for w in weights}

    def run() -> None:
        for w in weights:
            torch.nn.functional.linear(inputs[w.shape[1]], w)

    total = sum(w.numel() * w.element_size() for w in weights)
    return total / median_seconds(run, model.device, 7) / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="mid")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--context", type=int, default=300, help="cache length of the decode step (default 300)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="also time the compiled decode step")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    model = random_model(args.size).to(device)
    cfg, b = model.config, args.batch
    out: dict[str, object] = {"device": device_name(device), "size": args.size, "batch": b}
    out["streaming_gb_per_s"] = streaming_gb_per_s(device)
    out["decode_matmuls_row_major_gb_per_s"] = weight_read_gb_per_s(model, b, column_major=False)
    out["decode_matmuls_column_major_gb_per_s"] = weight_read_gb_per_s(model, b, column_major=True)
    text_bytes = sum(p.numel() * p.element_size() for p in model.language_model.parameters())
    out["text_weights_mib"] = text_bytes / 2**20
    out["step_floor_ms"] = text_bytes / out["streaming_gb_per_s"] / 1e6

    with torch.inference_mode():
        pixels = torch.randn(b, 3, cfg.vision.image_size, cfg.vision.image_size, device=device)
        out["vision_ms"] = 1e3 * median_seconds(lambda: model.image_features(pixels), device, 5)
        features = model.image_features(pixels)
        prompt = torch.full((b, cfg.num_image_tokens + 4), cfg.image_token_id, device=device)
        prompt[:, -4:] = 2
        cache = model.new_cache(b, max(args.context, prompt.shape[1] + 1))
        write = CacheWrite(cache, slots=torch.arange(b, device=device))
        out["prefill_ms"] = 1e3 * median_seconds(lambda: model.prefill(prompt, features, write), device, 5)
        tokens = torch.full((b,), 2, device=device)
        lengths = torch.full((b,), prompt.shape[1], device=device)
        if device.type == "cpu":
            model.runner.use_layout("column-major")
        out["step_ms"] = 1e3 * median_seconds(lambda: model.decode_step(tokens, lengths, cache), device, 20)
        if args.compile:
            model.runner.compile = True
            step = model.runner.step_fn()
            start = time.perf_counter()
            step(tokens, lengths, cache)
            out["compile_s"] = time.perf_counter() - start
            out["compiled_step_ms"] = 1e3 * median_seconds(lambda: step(tokens, lengths, cache), device, 20)

    for key, value in out.items():
        print(f"{key:40s} {value:.2f}" if isinstance(value, float) else f"{key:40s} {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
