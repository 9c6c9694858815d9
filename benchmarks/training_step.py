"""Examples per second of the fine-tuning step on the shapes recipe: eager against compiled, data made inline or in
a second process, batches grouped by length or not.

    python -m benchmarks.training_step [--steps 30] [--batch-size 32] [--threads 2]

Each variant trains the same random-initialized "shapes" model on the same stream for --steps steps after
--warmup steps (the compiled variant's compilation happens in the warm-up and is reported on its own). The
step covers everything a real step does: drawing and encoding the batch, forward, backward and AdamW.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

import torch

from benchmarks.common import cpu_model


@dataclass(frozen=True)
class Result:
    """One variant's figures: examples/s of the timed steps, compile time apart, and padded tokens per row."""

    variant: str
    examples_per_s: float
    compile_s: float
    steps: int
    batch_size: int
    mean_tokens: float  # padded tokens per row: what grouping by length saves


def run_variant(name: str, steps: int, warmup: int, batch: int, **options) -> Result:
    """Time `steps` fine-tuning steps of one variant after `warmup` untimed ones (which include compiling)."""
    from training.loop import FinetuneConfig, Trainer

    cfg = FinetuneConfig(output="/tmp/bench-training-step", scratch="shapes", train="shapes", batch_size=batch,
                         steps=warmup + steps, threads=options.pop("threads"), **options)  # fmt: skip
    trainer = Trainer(cfg, 0, 1, "cpu", None, None, lambda _: None)
    data = trainer.batches(0)
    tokens = []
    try:
        start = time.perf_counter()
        for step in range(warmup):
            trainer.train_step(data.get(step), step)
        compile_s = time.perf_counter() - start if cfg.compile else 0.0
        start = time.perf_counter()
        for step in range(warmup, warmup + steps):
            batch_ = data.get(step)
            tokens.append(batch_.input_ids.shape[1])
            trainer.train_step(batch_, step)
        seconds = time.perf_counter() - start
    finally:
        data.close()
    return Result(name, round(steps * batch / seconds, 2), round(compile_s, 1), steps, batch,
                  round(sum(tokens) / len(tokens), 1))  # fmt: skip


VARIANTS = {
    "eager": {},
    "eager, grouped by length (pool 4)": {"pool": 4},
    "eager, pool 4, data in a second process": {"pool": 4, "data_workers": 1},
    "compiled, pool 4": {"pool": 4, "compile": True},
    "compiled, pool 4, data in a second process": {"pool": 4, "compile": True, "data_workers": 1},
}


def main(argv: list[str] | None = None) -> list[Result]:
    """Run every variant (or those asked for) and print a table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="*", help="variants to run (default: all)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    print(f"{cpu_model()}, {args.threads} threads, batch {args.batch_size}, {args.steps} timed steps")
    for name, options in VARIANTS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        r = run_variant(name, args.steps, args.warmup, args.batch_size, threads=args.threads, **options)
        results.append(r)
        print(f"{name:<45} {r.examples_per_s:>7} examples/s  (tokens/row {r.mean_tokens}, compile {r.compile_s} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=2)
    return results


if __name__ == "__main__":
    main()
