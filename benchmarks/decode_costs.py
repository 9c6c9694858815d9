"""Where generation's time goes on this machine: memory bandwidth, the decode step's matrix products, one step,
a prefill and the vision tower, each timed alone (medians).

    python -m benchmarks.decode_costs [--size mid] [--batch 8] [--compile] [--json out.json]

A decode step multiplies a few rows by every weight of the text decoder, so its floor is the time to read those
weights once. This prints how fast plain streaming reads memory here, how fast the step's matrix products read
their weights in each layout the engine can choose (row-major [out, in] as stored, column-major, oneDNN's packed
format; model/layouts.py), at every thread
count the engine times, how long a whole step takes (eager, and compiled with --compile), what the engine itself
chooses for this bucket, and how long a prefill and the tower take, so a reader can see which of them bounds the
step and why the engine chose what it did.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from benchmarks.common import device_name, median_seconds, random_model
from model.attention import CacheWrite
from model.layouts import candidate_layouts, decoder_linears, lay_out, packed_linear, using_threads
from model.runner import Runner
from model.tuning import thread_options


def streaming_gb_per_s(device: torch.device, mib: int = 512) -> float:
    """Read bandwidth of a plain reduction over a buffer far larger than the caches."""
    x = torch.ones(mib * 2**20 // 4, device=device)
    return x.numel() * 4 / median_seconds(lambda: x.sum(), device, 5) / 1e9


def weight_read_gb_per_s(model, batch: int, layout: str) -> float:
    """Weight bytes read per second by one decode step's matrix products at `batch` rows, weights in `layout`."""
    plain = [m.weight.detach() for m in decoder_linears(model)] + [model.head_weight().detach()]
    weights = [(lay_out(w, layout, batch), w.shape[1]) for w in plain]
    inputs = {n: torch.randn(batch, n, device=model.device, dtype=model.dtype) for _, n in weights}
    multiply = packed_linear if layout == "packed" else F.linear

    def run() -> None:
        for w, n in weights:
            multiply(inputs[n], w)

    total = sum(w.numel() * w.element_size() for w in plain)
    return total / median_seconds(run, model.device, 7) / 1e9


def product_costs(model, batch: int, out: dict) -> None:
    """Bandwidth of the step's products per layout and thread count, and the best share of streaming speed."""
    best, every = 0.0, torch.get_num_threads()
    for threads in thread_options(every):
        with using_threads(threads):
            for layout in candidate_layouts(model):
                rate = weight_read_gb_per_s(model, batch, layout)
                suffix = "" if threads == every else f"_{threads}_thread"
                out[f"decode_matmuls_{layout.replace('-', '_')}{suffix}_gb_per_s"] = rate
                best = max(best, rate)
    out["decode_matmuls_best_share_of_streaming"] = best / out["streaming_gb_per_s"]


def step_costs(model, batch: int, context: int, compile: bool, out: dict) -> None:
    """The vision tower, a prefill, one decode step (eager per thread count, compiled), and the engine's choice."""
    cfg, device = model.config, model.device
    pixels = torch.randn(batch, 3, cfg.vision.image_size, cfg.vision.image_size, device=device)
    out["vision_ms"] = 1e3 * median_seconds(lambda: model.image_features(pixels), device, 5)
    features = model.image_features(pixels)
    prompt = torch.full((batch, cfg.num_image_tokens + 4), cfg.image_token_id, device=device)
    prompt[:, -4:] = 2
    cache = model.new_cache(batch, max(context, prompt.shape[1] + 1))
    write = CacheWrite(cache, slots=torch.arange(batch, device=device))
    out["prefill_ms"] = 1e3 * median_seconds(lambda: model.prefill(prompt, features, write), device, 5)
    tokens = torch.full((batch,), 2, device=device)
    lengths = torch.full((batch,), prompt.shape[1], device=device)
    runner = Runner(model, compile=compile)
    runner.start(batch, cache.max_len, runner.sampling)  # measures and chooses, as generate's first call does
    out["engine_choice"] = runner.choice.as_dict()
    step, every = runner.step_fn(compiled=False), torch.get_num_threads()
    for threads in thread_options(every):
        with using_threads(threads):
            suffix = "" if threads == every else f"_{threads}_thread"
            out[f"step_ms{suffix}"] = 1e3 * median_seconds(lambda: step(tokens, lengths, cache), device, 20)
    if compile:
        compiled = runner.step_fn(compiled=True)
        start = time.perf_counter()
        compiled(tokens, lengths, cache)
        out["compile_s"] = runner.choice.compile_s or time.perf_counter() - start
        out["compiled_step_ms"] = 1e3 * median_seconds(lambda: compiled(tokens, lengths, cache), device, 20)


def main(argv: list[str] | None = None) -> int:
    """Time every part, print one line each, and optionally write them as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="mid")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--context", type=int, default=300, help="cache length of the decode step (default 300)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--compile", action="store_true", help="also time the compiled decode step")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    model = random_model(args.size, dtype=getattr(torch, args.dtype)).to(device)
    out: dict[str, object] = {"device": device_name(device), "size": args.size, "batch": args.batch}
    out["dtype"] = args.dtype
    out["streaming_gb_per_s"] = streaming_gb_per_s(device)
    text_bytes = sum(p.numel() * p.element_size() for p in model.language_model.parameters())
    out["text_weights_mib"] = text_bytes / 2**20
    out["step_floor_ms"] = text_bytes / out["streaming_gb_per_s"] / 1e6
    with torch.inference_mode():
        product_costs(model, args.batch, out)
        step_costs(model, args.batch, args.context, args.compile, out)

    for key, value in out.items():
        print(f"{key:48s} {value:.2f}" if isinstance(value, float) else f"{key:48s} {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
