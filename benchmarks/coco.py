"""Timing: evals.coco.evaluate against plain pycocotools on a large random set (default 5,000 images × 30 objects).

    python -m benchmarks.coco [--images 5000] [--objects 30] [--categories 80] [--iou-types bbox segm]

Both sides start from the same JSON files on disk and are timed from loading the files to the summary, the way a
user runs them; the stats of the two are compared as well, so a fast wrong answer cannot pass unnoticed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import cpu_model
from evals.coco import STAT_NAMES, evaluate
from testing.coco_data import random_coco


def plain_pycocotools(gt_path: Path, res_path: Path, iou_type: str) -> tuple[np.ndarray, float]:
    """pycocotools exactly as its README runs it; returns (stats, seconds)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(res_path))
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Build the random set, score it with both evaluators, and print their times and the largest stat difference."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coco", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--objects", type=int, default=30, help="mean ground-truth objects per image")
    parser.add_argument("--categories", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iou-types", nargs="+", default=["bbox", "segm"], choices=["bbox", "segm"])
    parser.add_argument("--engine", default="auto")
    args = parser.parse_args(argv)

    masks = "segm" in args.iou_types
    start = time.perf_counter()
    dataset, results = random_coco(args.images, args.objects, n_categories=args.categories, seed=args.seed, masks=masks)
    print(
        f"data: {args.images} images, {len(dataset['annotations'])} ground-truth objects, {len(results)} detections, "
        f"{args.categories} categories, masks={masks} (built in {time.perf_counter() - start:.1f} s)"
    )
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs visible")
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "results.json"
        gt_path.write_text(json.dumps(dataset))
        for iou_type in args.iou_types:
            # pycocotools takes box areas for segm when results carry a bbox; give it masks only, as evals does.
            dets = results if iou_type == "bbox" else [{k: v for k, v in r.items() if k != "bbox"} for r in results]
            res_path.write_text(json.dumps(dets))
            reference, ref_seconds = plain_pycocotools(gt_path, res_path, iou_type)
            wall = time.perf_counter()
            ours = evaluate(gt_path, res_path, iou_type, engine=args.engine)  # type: ignore[arg-type]
            wall = time.perf_counter() - wall
            diff = float(np.abs(np.array([ours[k] for k in STAT_NAMES]) - reference).max())
            print(
                f"{iou_type}: pycocotools {ref_seconds:.1f} s | evals ({ours['engine']}) {wall:.1f} s "
                f"(speed-up {ref_seconds / wall:.1f}×) | AP {ours['AP']:.4f} | max |Δ stat| {diff:.1e}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
