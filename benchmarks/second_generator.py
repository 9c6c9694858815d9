"""Detection on drawings of another generator: the shapes spec drawn by `testing/other_shapes.py` (code written
apart from the training generator), written as a COCO set and scored by `python -m jobs.benchmark --coco`.

    python -m benchmarks.second_generator [--scenes 200] [--seed 777] [--checkpoint DIR] --output /abs/DIR

A model that learned the shapes finds them here about as well as on its training drawings; one that learned one
drawing routine does not. Prints the benchmark's lines (COCO AP, AP50, AR100) and leaves its metrics.json in
OUTPUT/bench.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_set(folder: Path, scenes: int, seed: int) -> Path:
    """`scenes` PNGs of the second generator in folder/images and their boxes in folder/instances.json."""
    from decoders import mask_to_rle
    from testing.other_shapes import scene
    from training.shapes_dataset import CATEGORIES, shape_annotation

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": CATEGORIES}
    for i in range(scenes):
        image, drawn = scene(rng)
        name = f"{i:05d}.png"
        image.save(images / name)
        gt["images"].append({"id": i + 1, "file_name": name, "width": image.width, "height": image.height})
        for d in drawn:
            gt["annotations"].append(shape_annotation(len(gt["annotations"]) + 1, i + 1, d.kind, d.box,
                                                      int(d.mask.sum()), mask_to_rle(d.mask), d.color))  # fmt: skip
    path = folder / "instances.json"
    path.write_text(json.dumps(gt))
    return path


def main(argv: list[str] | None = None) -> int:
    """Write the set, then label and score it with the benchmark job."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "paligemma-shapes"))
    p.add_argument("--output", required=True, help="an absolute folder: the set and the benchmark's output")
    args = p.parse_args(argv)
    out = Path(args.output)
    gt = write_set(out / "data", args.scenes, args.seed)
    from jobs.benchmark import main as benchmark

    return benchmark(["--checkpoint", args.checkpoint, "--coco", str(gt), "--images", str(out / "data" / "images"),
                      "--task", "detect", "--max-new-tokens", "128", "--output", str(out / "bench")])  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
