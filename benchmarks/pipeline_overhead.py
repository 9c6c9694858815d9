"""How much the Ray pipeline costs over calling generate in a plain loop, and what a second replica buys.

    python -m benchmarks.pipeline_overhead --size mid --images 96 --batch-size 8 --max-new-tokens 8

The same image files, prompt and batch size go through (a) one process that decodes each batch and calls
`PaliGemma.generate` in a loop and (b) `pipelines.job.run_label` with 1 and then 2 replicas on a local Ray
started once. The pipeline's figure is the job's own images/s: from the pipeline's start to its last row written,
so it includes starting the replica actors and loading the model in them (Ray's own start-up excluded). The
loop is reported both ways: "loop" times the batches after a warm-up batch, "loop_cold" includes loading the
model and has no warm-up, the same work the pipeline's figure covers. Runs alternate, so that a busy machine slows
all of them alike, and medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

PROMPT = "ocr"  # every row runs to --max-new-tokens or its own end, the same in the loop and the pipeline


def plain_loop(folder: Path, paths: list[Path], batch: int, new_tokens: int) -> tuple[float, float]:
    """(warm images/s, cold images/s including the model load)."""
    from labeling.images import decode_image
    from model import PaliGemma

    def run_all():
        for i in range(0, len(paths), batch):
            images = [decode_image(p.read_bytes()) for p in paths[i : i + batch]]
            model.generate(images, [PROMPT] * len(images), max_new_tokens=new_tokens, return_logprobs=True)

    start = time.perf_counter()
    model = PaliGemma.from_pretrained(folder)
    run_all()
    cold = len(paths) / (time.perf_counter() - start)
    start = time.perf_counter()
    run_all()  # the first pass was the warm-up
    return len(paths) / (time.perf_counter() - start), cold


def pipeline(folder: Path, images: Path, out: Path, batch: int, new_tokens: int, replicas: int) -> float:
    """Images/s of the whole label job (start-up, replicas loading the model and writing included)."""
    from pipelines.job import run_label
    from specs.label import LabelJob, OutputSpec, PlacementSpec, ReplicaSpec, SourceSpec, TaskSpec

    job = LabelJob(
        source=SourceSpec(images=str(images)),
        tasks=TaskSpec(task=PROMPT),
        replica=ReplicaSpec(checkpoint=str(folder), batch_size=batch, max_new_tokens=new_tokens),
        output=OutputSpec(output=str(out), progress=False),
        placement=PlacementSpec(replicas=replicas),
    )
    return run_label(job, log=lambda _: None).images_per_s


def main(argv: list[str] | None = None) -> dict:
    """Time the plain loop and the pipeline with 1 and 2 replicas, alternating, and print the medians."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="mid", help="random weights of a named size (model.sizes.SIZES)")
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="alternate loop and pipeline runs this many times")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import ray
    import skimage

    from benchmarks.common import random_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="bench_overhead"))
    results: dict[str, list[float]] = {"loop": [], "loop_cold": [], "pipeline_1": [], "pipeline_2": []}
    try:
        folder, images = tmp / "ckpt", tmp / "images"
        random_checkpoint(folder, args.size)
        images.mkdir()
        photos = [Path(skimage.__file__).parent / "data" / n for n in ("astronaut.png", "chelsea.png", "coffee.png")]
        paths = []
        for i in range(args.images):
            paths.append(images / f"{i:04d}{photos[i % 3].suffix}")
            shutil.copy(photos[i % 3], paths[-1])
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
        for r in range(args.repeats):
            warm, cold = plain_loop(folder, paths, args.batch_size, args.max_new_tokens)
            results["loop"].append(warm)
            results["loop_cold"].append(cold)
            for n in (1, 2):
                ips = pipeline(folder, images, tmp / f"out-{r}-{n}", args.batch_size, args.max_new_tokens, n)
                results[f"pipeline_{n}"].append(ips)
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    median = {k: statistics.median(v) for k, v in results.items()}
    report = {
        "size": args.size,
        "images": args.images,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "runs_images_per_s": {k: [round(x, 3) for x in v] for k, v in results.items()},
        "median_images_per_s": {k: round(v, 3) for k, v in median.items()},
        "pipeline_1_over_loop": round(median["pipeline_1"] / median["loop"], 3),
        "pipeline_1_over_loop_cold": round(median["pipeline_1"] / median["loop_cold"], 3),
        "pipeline_2_over_1": round(median["pipeline_2"] / median["pipeline_1"], 3),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
