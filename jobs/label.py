"""Label images with PaliGemma on Ray: a folder, a COCO dataset or a manifest -> Parquet rows + COCO JSON.

    python -m jobs.label --checkpoint DIR --images photos/ --task detect --classes "cat ; dog" --output /abs/out
    python -m jobs.label --checkpoint DIR --coco ann.json --images val2017/ --task segment --vae vae-oid.npz \\
                         --output /abs/out --replicas 4 --device cuda --gpus-per-replica 0.5 --dtype bf16
    python -m jobs.label --checkpoint DIR --manifest rows.parquet --output /abs/out      # path, prompt[, image_id]

Runs locally as is (Ray starts itself) and unchanged on a cluster:
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- python -m jobs.label ...
(output paths must then be absolute: the job runs in an uploaded copy of this folder).

Output folder: predictions/part-*.parquet (one row per image and prompt: image_id, path, width, height, task,
prompt, text, objects, error, model, seconds), coco_results.json and coco_dataset.json for detect/segment,
previews/, summary.json, run.json. An unreadable image becomes a row with `error` set and the job goes on.
Exit status: 0 when something was labeled (or everything was already done), 1 when every input failed,
2 for a configuration error (arguments, checkpoint, output folder).
"""

from __future__ import annotations

import argparse
import sys

from tasks import TASKS


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Model, replica and output flags shared with `python -m jobs.benchmark`."""
    task = p.add_argument_group("generation")
    task.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default 64)")
    task.add_argument("--vae", help="big_vision's vae-oid.npz, to decode segment masks (boxes only without it)")
    model = p.add_argument_group("model and replicas")
    model.add_argument("--checkpoint", required=True, help="Hugging Face PaliGemma folder (safetensors)")
    model.add_argument(
        "--backend",
        choices=("native", "transformers"),
        default="native",
        help="our model (default) or transformers' PaliGemmaForConditionalGeneration",
    )
    model.add_argument("--replicas", type=int, default=1, help="model replicas, one Ray actor each (default 1)")
    model.add_argument("--gpus-per-replica", type=float, help="GPUs per replica, may be fractional (default 1 on cuda)")
    model.add_argument(
        "--cpus-per-replica",
        type=float,
        help="CPUs Ray reserves per replica (default: 1, less when that would leave no CPU to decode)",
    )
    model.add_argument(
        "--threads-per-replica", type=int, help="torch threads in a CPU replica (default: CPUs/replicas)"
    )
    model.add_argument("--batch-size", type=int, default=8, help="images per generate call (default 8)")
    model.add_argument("--device", choices=("cpu", "cuda"), help="where replicas run (default cpu)")
    model.add_argument("--dtype", help="float32 (default), bf16 or fp16")
    out = p.add_argument_group("output")
    out.add_argument("--output", required=True, help="output folder (absolute path under ray job submit)")
    out.add_argument("--resume", action="store_true", help="continue a stopped run: skip inputs already written")
    out.add_argument("--limit", type=int, help="only the first N inputs of the source (a quick trial)")
    out.add_argument("--max-pixels", type=int, default=None, help="refuse larger images (decompression bombs)")
    out.add_argument("--rows-per-part", type=int, default=1000, help="rows per Parquet part file (default 1000)")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.label",
        description=__doc__.split("\n")[0],
        epilog="\n".join(__doc__.split("\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("inputs")
    src.add_argument("--images", help="image folder (searched recursively), or the image root of --coco")
    src.add_argument("--coco", help="COCO annotation file: label its images, keep its image and category ids")
    src.add_argument("--manifest", help="Parquet or CSV with a path column, optional prompt and image_id columns")
    task = p.add_argument_group("task")
    task.add_argument("--task", choices=sorted(TASKS), help="what to ask (optional for a manifest with prompts)")
    task.add_argument("--classes", help='detect/segment classes, "cat ; dog" (default for --coco: its categories)')
    task.add_argument(
        "--per-class", action="store_true", help="detect/segment: ask for one class per prompt (a row per class)"
    )
    task.add_argument("--prompt", help="the question for --task answer, the whole prompt for --task raw")
    task.add_argument("--lang", help="language for caption/describe/answer (default en)")
    add_run_arguments(p)
    extra = p.add_argument_group("labeling outputs")
    extra.add_argument("--previews", type=int, default=0, metavar="N", help="draw the first N labeled images")
    extra.add_argument(
        "--min-score", type=float, default=0.0, help="objects below this score stay out of coco_dataset.json"
    )
    return p


def config_from_args(args: argparse.Namespace):
    from pipelines.decode import DEFAULT_MAX_PIXELS
    from pipelines.label import LabelConfig

    return LabelConfig(
        checkpoint=args.checkpoint,
        output=args.output,
        task=args.task,
        classes=getattr(args, "classes", None),
        per_class=getattr(args, "per_class", False),
        prompt=getattr(args, "prompt", None),
        lang=getattr(args, "lang", None),
        images=args.images,
        coco=args.coco,
        manifest=getattr(args, "manifest", None),
        replicas=args.replicas,
        gpus_per_replica=args.gpus_per_replica,
        cpus_per_replica=args.cpus_per_replica,
        threads_per_replica=args.threads_per_replica,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        backend=args.backend,
        vae=args.vae,
        max_new_tokens=args.max_new_tokens,
        resume=args.resume,
        limit=args.limit,
        previews=getattr(args, "previews", 0),
        min_score=getattr(args, "min_score", 0.0),
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
        rows_per_part=args.rows_per_part,
        progress=not args.no_progress,
    )


def run(cfg):
    """run_label with the exit-status rules: (summary, 0), (summary, 1) when every input failed, (None, 1 or 2)."""
    from pipelines.label import ConfigError, run_label

    try:
        summary = run_label(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return None, 2
    except Exception as e:  # the Ray pipeline failed as a whole (e.g. no replica could start)
        print(f"error: the labeling job failed: {type(e).__name__}: {e}", file=sys.stderr)
        return None, 1
    print(summary.line(), flush=True)
    if summary.inputs and summary.errors == summary.inputs:
        print("error: every input failed (see the error column)", file=sys.stderr)
        return summary, 1
    return summary, 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(config_from_args(args))[1]


if __name__ == "__main__":
    sys.exit(main())
