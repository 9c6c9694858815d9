"""Our generation against transformers' on the same weights, in one process, interleaved, medians reported.

    python -m jobs.bench --size mid --batch 8 --new-tokens 32 [--compile]           # fixed work
    python -m jobs.bench --workload mixed [--compile]                               # the product's own workload
    python -m jobs.bench --size pg1-3b --dtype bf16 --device cuda --batch 32 64 --compile

fixed: every row generates exactly --new-tokens tokens (end-of-sequence ignored) from the same prompt, so both
sides do the same amount of work; the batch is the whole call.

mixed: the bundled shapes model on 64 shapes scenes with mixed prompts (detect lists, captions, counting
questions, segment), answers up to 128 tokens, each row stopping at its own end-of-sequence. Ours keeps
--in-flight rows generating (continuous batching: a finished row's slot takes the next pair at once);
transformers gets its best case: rows grouped by prompt (no padding between prompts), batches of --in-flight,
each batch running until its longest answer ends. Both must give the same answers.

Warm-up runs (which include compiling, reported on its own) are excluded. tokens/s counts generated tokens.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import device_name, hf_generate, random_checkpoint, sample_images, synchronize
from model import PaliGemma
from model.loading import resolve_dtype
from model.runner import Runner
from model.sizes import SIZES

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    """One line of the benchmark: both sides on one workload and batch, and what our engine chose for it."""

    workload: str
    size: str
    device: str
    dtype: str
    batch: int
    compiled: bool  # --compile: the engine was allowed to compile (and kept the compiled step only if faster)
    pairs: int
    ours_s: float
    transformers_s: float
    ours_images_per_s: float
    transformers_images_per_s: float
    ours_tokens_per_s: float
    transformers_tokens_per_s: float
    speedup: float
    same_tokens: bool
    compile_s: float
    engine: tuple[dict, ...]  # the runner's choice per (slots, length) bucket: layout, step, threads, timings


def shapes_workload(n: int = 64, seed: int = 777) -> tuple[list[Image.Image], list[str]]:
    """n scenes from the shapes generator, each with one prompt: detect lists, captions, counts and segments."""
    from training.shapes import CLASSES, count_question, draw_scene

    rng = np.random.default_rng(seed)
    images, prompts = [], []
    kinds = ["detect circle ; square ; triangle", "caption en", "count", "segment"]
    for i in range(n):
        image, shapes = draw_scene(rng)
        kind = kinds[i % len(kinds)]
        if kind == "count":
            kind = count_question(CLASSES[int(rng.integers(3))])
        elif kind == "segment":
            kind = f"segment {shapes[0].kind}"
        images.append(image)
        prompts.append(kind)
    return images, prompts


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of `fn` takes, the device synchronized before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def bench(ours, hf, args, workload: str, batch: int, images, prompts, stop_at_eos: bool, compile_s: float) -> Row:
    """Warm both sides up, then time them interleaved (ours, transformers, ours, ...) and compare medians."""
    device = ours.device
    results: dict[str, list] = {}
    new_tokens = args.new_tokens if workload == "fixed" else 128

    def run_ours():
        gens = ours.generate(images, prompts, max_new_tokens=new_tokens, return_logprobs=True,
                             stop_at_eos=stop_at_eos, batch_size=batch)  # fmt: skip
        results["ours"] = [g.token_ids for g in gens]

    def run_hf():
        order = sorted(range(len(prompts)), key=lambda i: (prompts[i], i))  # grouped by prompt: no padding
        rows: dict[int, list[int]] = {}
        for start in range(0, len(order), batch):
            chunk = order[start : start + batch]
            out = hf_generate(hf, ours, [images[i] for i in chunk], [prompts[i] for i in chunk], new_tokens,
                              stop_at_eos)  # fmt: skip
            rows.update(zip(chunk, out, strict=True))
        results["hf"] = [rows[i] for i in range(len(prompts))]

    for _ in range(args.warmup):
        run_ours()
        run_hf()
    ours_t, hf_t = [], []
    for _ in range(args.repeats):  # interleaved, so drifting clocks or a busy neighbour hit both alike
        ours_t.append(time_call(run_ours, device))
        hf_t.append(time_call(run_hf, device))
    ours_s, hf_s = statistics.median(ours_t), statistics.median(hf_t)
    tokens = sum(len(r) for r in results["ours"])
    return Row(
        workload=workload,
        size=model_name(args, workload),
        device=device_name(device),
        dtype=str(ours.dtype).removeprefix("torch."),
        batch=batch,
        compiled=args.compile,
        pairs=len(prompts),
        ours_s=round(ours_s, 4),
        transformers_s=round(hf_s, 4),
        ours_images_per_s=round(len(prompts) / ours_s, 2),
        transformers_images_per_s=round(len(prompts) / hf_s, 2),
        ours_tokens_per_s=round(tokens / ours_s, 1),
        transformers_tokens_per_s=round(tokens / hf_s, 1),
        speedup=round(hf_s / ours_s, 2),
        same_tokens=results["ours"] == results["hf"],
        compile_s=round(compile_s, 1),
        engine=tuple(c.as_dict() for c in ours.runner.choices.values()),
    )


def model_name(args, workload: str) -> str:
    """The model column: the checkpoint folder's name, or the named size (with its resolution)."""
    if workload == "mixed" or args.checkpoint is not None:
        return Path(args.folder).name
    return f"{args.size}@{args.image_size}" if args.image_size else args.size


def load_pair(args, folder: Path):
    """Ours and transformers' model from the same folder (ours with the engine options asked for)."""
    from transformers import PaliGemmaForConditionalGeneration

    dtype = resolve_dtype(args.dtype)
    ours = PaliGemma.from_pretrained(folder, dtype=dtype, device=args.device, compile=args.compile)
    if args.no_measure:
        ours.runner = Runner(ours, compile=args.compile, measure=False)
    hf = PaliGemmaForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(args.device).eval()
    return ours, hf


def compile_warmup(ours: PaliGemma, images, prompts, batch: int, new_tokens: int) -> float:
    """Compile (and warm) every bucket the timed runs will use; returns the seconds it took."""
    if not ours.runner.compile:
        return 0.0
    start = time.perf_counter()
    ours.generate(images, prompts, max_new_tokens=new_tokens, batch_size=batch)
    synchronize(ours.device)
    return time.perf_counter() - start


def parse_args(argv: list[str] | None):
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=("fixed", "mixed"), default="fixed")
    p.add_argument("--size", default="mid", choices=sorted(SIZES), help="random weights of a named size")
    p.add_argument("--checkpoint", type=Path, help="a checkpoint folder instead of random weights")
    p.add_argument("--image-size", type=int, help="random weights at this resolution (448, 896) instead of 224 px")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch (fixed) or rows in flight (mixed)")
    p.add_argument("--prompt", default="caption en", help="fixed workload: the prompt of every row")
    p.add_argument("--new-tokens", type=int, default=32, help="fixed workload: tokens every row generates")
    p.add_argument("--pairs", type=int, default=64, help="mixed workload: scenes (one prompt each)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--compile",
        action="store_true",
        help="let our engine compile its decode step (kept only where timed faster; compile s apart)",
    )
    p.add_argument(
        "--no-measure",
        action="store_true",
        help="no timing at warm-up: row-major weights, torch's threads, compiled exactly when --compile",
    )
    p.add_argument("--threads", type=int, help="torch threads for both sides (default: torch's own count)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the rows here as JSON (with the engine's choices)")
    p.add_argument("--verbose", action="store_true", help="log the engine's choices as it makes them")
    return p.parse_args(argv)


def run(args) -> list[Row]:
    """Every row the arguments ask for (random weights written to a temporary folder when no checkpoint)."""
    batches = args.batch or ([8] if args.workload == "fixed" else [16])
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.checkpoint
        if args.workload == "mixed" and folder is None:
            folder = ROOT / "checkpoints" / "paligemma-shapes"
        if folder is None:
            folder = Path(tmp)
            random_checkpoint(folder, args.size, dtype=resolve_dtype(args.dtype), image_size=args.image_size)
        args.folder = folder
        ours, hf = load_pair(args, folder)
        rows = []
        for b in batches:
            if args.workload == "fixed":
                images, prompts, stop = sample_images(b), [args.prompt] * b, False
                hf.generation_config.eos_token_id = None  # a fixed amount of work for both
            else:
                (images, prompts), stop = shapes_workload(args.pairs), True
            compile_s = compile_warmup(ours, images, prompts, b, args.new_tokens if not stop else 128)
            rows.append(bench(ours, hf, args, args.workload, b, images, prompts, stop, compile_s))
    return rows


def print_rows(rows: list[Row]) -> None:
    """The rows as a table, then the engine's choices."""
    header = f"{'workload':>8} {'model':>12} {'dtype':>8} {'batch':>5} {'compiled':>8} "
    header += f"{'ours img/s':>10} {'hf img/s':>9} {'ours tok/s':>10} {'hf tok/s':>9} {'speedup':>7} {'same':>5} "
    header += f"{'compile s':>9}"
    print(rows[0].device if rows else "")
    print(header)
    for r in rows:
        print(
            f"{r.workload:>8} {r.size[:12]:>12} {r.dtype:>8} {r.batch:>5} {str(r.compiled):>8} "
            f"{r.ours_images_per_s:>10} {r.transformers_images_per_s:>9} {r.ours_tokens_per_s:>10} "
            f"{r.transformers_tokens_per_s:>9} {r.speedup:>6}x {str(r.same_tokens):>5} {r.compile_s:>9}"
        )
    for r in rows:
        for choice in r.engine:
            step = "compiled" if choice["compiled"] else "eager"
            print(f"engine, {choice['slots']} slots x {choice['length']}: {choice['layout']} weights, {step}, "
                  f"{choice['threads']} threads; step ms {choice['step_ms']}")  # fmt: skip


def main(argv: list[str] | None = None) -> list[Row]:
    """Run the benchmark, print its table, and write the rows as JSON when asked."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    rows = run(args)
    print_rows(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return rows


if __name__ == "__main__":
    main()
