"""Score a checkpoint on a COCO-style dataset or on held-out shapes: label with the label job, then evaluate.

    python -m jobs.benchmark --checkpoint DIR --coco instances_val2017.json --images val2017/ --task detect \\
                             --output /abs/bench
    python -m jobs.benchmark --checkpoint DIR --coco refcoco.json --images imgs/ --task segment --vae vae-oid.npz \\
                             --output /abs/bench --replicas 4 --device cuda --gpus-per-replica 0.5 --dtype bf16
    python -m jobs.benchmark --checkpoint checkpoints/paligemma-shapes --shapes 200 --shapes-seed 777 \\
                             --vae checkpoints/paligemma-shapes/vae.npz --output /abs/bench-shapes

--shapes N draws N held-out scenes and N word images (training/shapes_dataset.py; pick a --shapes-seed the
training never used), writes them with their COCO ground truth and expected answers under OUTPUT/shapes-data,
labels every (image, prompt) of the set and scores detection AP50, segmentation mIoU, counting, OCR and caption
exact match (evals/shapes.py).

The classes are the dataset's category names and the detections keep its category ids. Writes the labeling
job's outputs (predictions/, coco_results.json, ...) and metrics.json: the 12 COCO stats for boxes (and, for
segment with --vae, for masks) with the per-class table, the number of images and the labeling summary. With
--limit N only the first N images are labeled and scored. Runs locally or under `ray job submit`, like
jobs.label. Exit status: 0 on success, 1 when every image failed, 2 for a configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from jobs.cli import Parser, add_spec_arguments, command_parser
from jobs.label import add_run_arguments, config_from_args, run


def build_parser() -> Parser:
    """The benchmark's command line: its dataset, then the label job's model, replica and output options."""
    from specs.label import SourceSpec

    p = command_parser("python -m jobs.benchmark", __doc__)
    data = add_spec_arguments(p, SourceSpec, title="dataset (--coco with --images, or --shapes)",
                              exclude=("manifest", "parquet", "image_column"))  # fmt: skip
    from tasks import TASKS, takes_classes

    object_tasks = sorted(name for name in TASKS if takes_classes(name))
    data.add_argument("--task", choices=object_tasks, default="detect", help="(default detect)")
    data.add_argument("--shapes", type=int, metavar="N", help="held-out synthetic shapes: N scenes and N words")
    data.add_argument("--shapes-seed", type=int, default=777, help="seed of the --shapes set (default 777)")
    data.add_argument("--large-shapes", type=int, metavar="N", help="held-out large scenes of 10-30 small shapes "
                      "(training/large_scenes.py): N scenes, e.g. to score --tile")  # fmt: skip
    data.add_argument("--large-size", type=int, default=896, help="side of the --large-shapes scenes (default 896)")
    add_run_arguments(p)
    return p


def job_from_args(args: argparse.Namespace, **source_overrides):
    """The label job of the benchmark: its dataset's source and task, the label job's other options; None (after
    printing the one-line error) when they do not fit together."""
    from specs.fields import SpecError

    try:
        return config_from_args(args, **source_overrides)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.benchmark`: label and score a COCO set, or the synthetic shapes set."""
    args = build_parser().parse_args(argv)
    if sum(v is not None for v in (args.shapes, args.coco, args.large_shapes)) != 1:
        print("error: give one of --coco with --images, --shapes N or --large-shapes N", file=sys.stderr)
        return 2
    if args.shapes is not None or args.large_shapes is not None:
        return run_shapes(args)
    from evals.coco import evaluate

    job = job_from_args(args)
    if job is None:
        return 2
    summary, status = run(job)
    if summary is None:
        return status
    from evals.ground_truth import read_json
    from storage import locate

    out = locate(args.output)
    rows_ids = {row["image_id"] for row in _rows(args.output)}
    metrics = {"task": args.task, "checkpoint": str(Path(args.checkpoint).absolute()), "gt": args.coco}
    from tasks import TASKS

    iou_types = ["bbox"] + (["segm"] if TASKS[args.task].decodes_masks and args.vae else [])
    results = read_json(out.join("coco_results.json").uri)
    for iou_type in iou_types:
        try:
            metrics[iou_type] = evaluate(args.coco, results, iou_type, image_ids=sorted(rows_ids))
        except (ValueError, KeyError) as e:
            print(f"error: cannot evaluate {iou_type}: {e}", file=sys.stderr)
            return 2
        stats = metrics[iou_type]
        print(f"{iou_type}: AP {stats['AP']:.3f}  AP50 {stats['AP50']:.3f}  AR100 {stats['AR100']:.3f}")
    metrics["labeling"] = asdict(summary)
    out.join("metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    print(f"wrote {out.join('metrics.json').uri}")
    return status


def label_and_score_shapes(job, data: Path) -> tuple[object, int, list[dict], dict | None]:
    """Label every (image, prompt) of a shapes set (`jobs.make_shapes eval`) with the label job and score the rows.

    job: a LabelJob whose manifest is data/manifest.parquet. Returns (summary, status, rows, scores); summary
    and scores are None when the job could not run (status says why, as for jobs.label).
    """
    import pandas as pd

    from evals.shapes import shapes_scores
    from rows import read_rows

    summary, status = run(job)
    if summary is None:
        return None, status, [], None
    manifest = pd.read_parquet(data / "manifest.parquet").to_dict("records")
    rows = read_rows(job.output.output)
    return summary, status, rows, shapes_scores(rows, manifest, data / "annotations.json")


def run_shapes(args: argparse.Namespace) -> int:
    """--shapes N: draw the held-out set (once per output folder), label it, score it, write metrics.json."""
    from evals.shapes import headline
    from storage import is_uri

    flag, count = ("--shapes", args.shapes) if args.shapes is not None else ("--large-shapes", args.large_shapes)
    if count < 1:
        print(f"error: {flag} needs at least 1 scene", file=sys.stderr)
        return 2
    if is_uri(args.output):
        print(f"error: {flag} draws its set into the output folder: give a local --output", file=sys.stderr)
        return 2
    out = Path(args.output)
    data = out / "shapes-data"
    if not (data / "manifest.parquet").is_file():  # the set is a pure function of the seed: --resume redraws nothing
        counts = draw_set(args, data)
        print(f"wrote {counts['images']} images and {counts['prompts']} prompts to {data}")
    args.task = None  # every row of the set's manifest brings its prompt
    job = job_from_args(args, manifest=str(data / "manifest.parquet"), coco=None, images=None)
    if job is None:
        return 2
    summary, status, _, scores = label_and_score_shapes(job, data)
    if summary is None:
        return status
    top = headline(scores)
    if args.large_shapes is not None:  # detect and segment rows only
        top = {k: v for k, v in top.items() if k in ("detection AP50", "segmentation mIoU")}
    for name, value in top.items():
        print(f"{name}: {value:.3f}")
    metrics = {
        "checkpoint": str(Path(args.checkpoint).absolute()),
        "shapes": args.shapes,
        "large_shapes": args.large_shapes,
        "large_size": args.large_size if args.large_shapes else None,
        "tiles": job.tiles.settings(),
        "shapes_seed": args.shapes_seed,
        "headline": top,
        "scores": scores,
        "labeling": asdict(summary),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    print(f"wrote {out / 'metrics.json'}")
    return status


def draw_set(args: argparse.Namespace, data: Path) -> dict:
    """The held-out set the arguments name: the spec's scenes and words, or large scenes of small shapes."""
    if args.large_shapes is not None:
        from training.large_scenes import write_large_benchmark_set

        return write_large_benchmark_set(data, args.large_shapes, args.shapes_seed, args.large_size)
    from training.shapes_dataset import write_benchmark_set

    return write_benchmark_set(data, args.shapes, args.shapes, args.shapes_seed)


def _rows(out: str) -> list[dict]:
    """The image ids of a run's rows (what the COCO evaluation is restricted to)."""
    from rows import iter_rows

    return list(iter_rows(out, columns=["image_id"]))


if __name__ == "__main__":
    sys.exit(main())
