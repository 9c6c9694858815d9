"""Label images with PaliGemma on Ray: a folder, COCO dataset, manifest or Parquet dataset -> Parquet rows + COCO.

    python -m jobs.label --checkpoint DIR --images photos/ --task detect --classes "cat ; dog" --output /abs/out
    python -m jobs.label --checkpoint DIR --coco ann.json --images val2017/ --task segment --vae vae-oid.npz \\
                         --output /abs/out --replicas 4 --device cuda --gpus-per-replica 0.5 --dtype bf16
    python -m jobs.label --checkpoint DIR --manifest rows.parquet --output /abs/out      # path, prompt[, image_id]
    python -m jobs.label --checkpoint DIR --images s3://bucket/photos --task caption --output s3://bucket/labels
    python -m jobs.label --checkpoint DIR --parquet s3://bucket/hf-dataset/ --task ocr --output s3://bucket/ocr

Inputs and outputs may be local paths or URIs (s3://, gs://, abfs://, ...); credentials and endpoints come from
the usual environment (AWS_* variables including AWS_ENDPOINT_URL, instance profiles,
GOOGLE_APPLICATION_CREDENTIALS), never from arguments. Runs locally as is (a private local Ray) and unchanged
on a cluster:
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- python -m jobs.label ...
(output paths must then be absolute or URIs: the job runs in an uploaded copy of this folder).

Output folder: predictions/part-*.parquet (one row per image and prompt: image_id, path, width, height, task,
prompt, text, objects, error, model, seconds; a part counts once its record in predictions/_commits exists),
coco_results.json and coco_dataset.json for detect/segment, exports/FORMAT/ for --export, previews/,
summary.json, run.json. An unreadable image becomes a row with `error` set and the job goes on; an input that
kills its replica every time is set aside as an error row after --retries tries. Ctrl-C (or SIGTERM) saves the
rows so far and says how to go on. Exit status: 0 when something was labeled (or everything was already done),
1 when every input failed (on --resume: every row of the output, earlier sittings' included), 2 for a
configuration error (arguments, checkpoint, output folder), 130/143 when interrupted.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from jobs.cli import Parser, add_max_pixels, command_parser, positive_int, unit_interval
from tasks import TASKS


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Model, replica and output flags shared with `python -m jobs.benchmark`."""
    task = p.add_argument_group("generation")
    task.add_argument("--max-new-tokens", type=positive_int, default=64, help="answer length limit (default 64)")
    task.add_argument("--vae", help="big_vision's vae-oid.npz, to decode segment masks (boxes only without it)")
    model = p.add_argument_group("model and replicas")
    model.add_argument("--checkpoint", required=True, help="Hugging Face PaliGemma folder (safetensors)")
    model.add_argument(
        "--backend",
        choices=("native", "transformers"),
        default="native",
        help="our model (default) or transformers' PaliGemmaForConditionalGeneration",
    )
    model.add_argument("--replicas", type=positive_int, default=1, help="model replicas, one Ray actor each")
    model.add_argument("--gpus-per-replica", type=float, help="GPUs per replica, may be fractional (default 1 on cuda)")
    model.add_argument(
        "--cpus-per-replica",
        type=float,
        help="CPUs Ray reserves per replica (default: 1, less when that would leave no CPU to decode)",
    )
    model.add_argument(
        "--threads-per-replica", type=positive_int, help="torch threads in a CPU replica (default: CPUs/replicas)"
    )
    model.add_argument(
        "--batch-size", type=positive_int, default=8, help="rows handed to a replica at once (default 8)"
    )
    model.add_argument(
        "--in-flight",
        type=positive_int,
        help="rows generating at once in a replica; a finished row's slot takes the next row at once "
        "(default: what the device's memory holds, at most the batch)",
    )
    model.add_argument("--compile", action="store_true", help="compile the decode step (slower start, faster steps)")
    model.add_argument("--device", choices=("cpu", "cuda"), help="where replicas run (default cpu)")
    model.add_argument("--dtype", help="float32 (default), bf16 or fp16")
    model.add_argument(
        "--retries", type=int, default=2, help="times a batch is redone after its replica died (default 2)"
    )
    model.add_argument(
        "--replica-resource",
        action="append",
        metavar="NAME=AMOUNT",
        help="a custom Ray resource each replica needs (places replicas on the nodes that have it); repeatable",
    )
    model.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a private local Ray)")
    out = p.add_argument_group("output")
    out.add_argument("--output", required=True, help="output folder or URI (absolute under ray job submit)")
    out.add_argument("--resume", action="store_true", help="continue a stopped run: skip inputs already written")
    out.add_argument(
        "--retry-errors",
        nargs="?",
        const="default",
        metavar="KINDS",
        help="with --resume: label failed rows again (default kinds: read, generation, replica; or 'all', or a "
        "list such as read,decode)",
    )
    out.add_argument("--limit", type=positive_int, help="only the first N inputs of the source (a quick trial)")
    add_max_pixels(out)
    out.add_argument("--rows-per-part", type=positive_int, default=1000, help="rows per Parquet part (default 1000)")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    out.add_argument("--verbose", action="store_true", help="show everything Ray logs, warnings included")


def add_object_arguments(p: argparse.ArgumentParser) -> None:
    """Score thresholds and NMS, applied to the rows (and so to every export); recorded for --resume."""
    g = p.add_argument_group("objects kept (detect/segment)")
    g.add_argument("--min-score", type=unit_interval, default=0.0, help="drop objects scoring below this")
    g.add_argument("--class-thresholds", metavar="CLS=S,...", help='per-class minimum scores, e.g. "cat=0.4,dog=0.6"')
    g.add_argument("--nms", type=unit_interval, metavar="IOU", help="drop boxes overlapping a better one above IOU")
    g.add_argument("--class-agnostic-nms", action="store_true", help="NMS across classes, not within each")


def build_parser() -> Parser:
    p = command_parser("python -m jobs.label", __doc__)
    src = p.add_argument_group("inputs")
    src.add_argument("--images", help="image folder or URI prefix (searched recursively), or the image root of --coco")
    src.add_argument("--coco", help="COCO annotation file: label its images, keep its image and category ids")
    src.add_argument("--manifest", help="Parquet or CSV with a path column, optional prompt and image_id columns")
    src.add_argument("--parquet", help="Parquet dataset (file, folder or URI) whose rows hold the image bytes")
    src.add_argument("--image-column", help="--parquet: the column with the images (default: image)")
    task = p.add_argument_group("task")
    task.add_argument("--task", choices=sorted(TASKS), help="what to ask (optional when every input has a prompt)")
    task.add_argument("--classes", help='detect/segment classes, "cat ; dog" (default for --coco: its categories)')
    task.add_argument(
        "--per-class", action="store_true", help="detect/segment: ask for one class per prompt (a row per class)"
    )
    task.add_argument("--prompt", help="the question for --task answer, the whole prompt for --task raw")
    task.add_argument("--lang", help="language for caption/describe/answer (default en)")
    add_run_arguments(p)
    add_object_arguments(p)
    extra = p.add_argument_group("labeling outputs")
    extra.add_argument("--previews", type=int, default=0, metavar="N", help="draw the first N labeled images")
    extra.add_argument(
        "--export", metavar="FORMATS", help="also write coco, yolo, voc and/or labelstudio, e.g. yolo,voc"
    )
    return p


def config_from_args(args: argparse.Namespace):
    from labeling.errors import parse_kinds
    from labeling.filters import parse_class_thresholds
    from pipelines.config import ConfigError, LabelConfig

    try:
        resources = parse_resources(args.replica_resource or [])
        thresholds = parse_class_thresholds(getattr(args, "class_thresholds", None))
        retry = parse_kinds(args.retry_errors) if args.retry_errors is not None else ()
    except ValueError as e:
        raise ConfigError(str(e)) from e
    exports = tuple(f.strip() for f in (getattr(args, "export", None) or "").split(",") if f.strip())
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
        parquet=getattr(args, "parquet", None),
        image_column=getattr(args, "image_column", None),
        replicas=args.replicas,
        gpus_per_replica=args.gpus_per_replica,
        cpus_per_replica=args.cpus_per_replica,
        threads_per_replica=args.threads_per_replica,
        replica_resources=resources,
        batch_size=args.batch_size,
        in_flight=args.in_flight,
        compile=args.compile,
        device=args.device,
        dtype=args.dtype,
        backend=args.backend,
        vae=args.vae,
        max_new_tokens=args.max_new_tokens,
        resume=args.resume,
        retry_errors=retry,
        retries=args.retries,
        limit=args.limit,
        previews=getattr(args, "previews", 0),
        min_score=getattr(args, "min_score", 0.0),
        class_thresholds=thresholds,
        nms_iou=getattr(args, "nms", None),
        class_agnostic_nms=getattr(args, "class_agnostic_nms", False),
        exports=exports,
        max_pixels=args.max_pixels,
        rows_per_part=args.rows_per_part,
        address=args.address,
        progress=not args.no_progress,
        verbose=args.verbose,
    )


def parse_resources(entries: list[str]) -> dict[str, float]:
    """--replica-resource NAME=AMOUNT entries -> {NAME: AMOUNT}."""
    out = {}
    for entry in entries:
        name, sep, amount = entry.partition("=")
        try:
            if not name.strip():
                raise ValueError
            out[name.strip()] = float(amount) if sep else 1.0
        except ValueError:
            raise ValueError(f"--replica-resource: expected NAME=AMOUNT, got {entry!r}") from None
    return out


def resume_command(argv: list[str] | None) -> str:
    """The command line that continues this run."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--resume" not in args:
        args.append("--resume")
    return "python -m jobs.label " + shlex.join(args)


def run(cfg, argv: list[str] | None = None, replica_class=None):
    """run_label with the exit-status rules: (summary, 0), (summary, 1) when every input failed, (None, 1 or 2),
    and (None, 130/143) when interrupted."""
    from pipelines.config import ConfigError
    from pipelines.label import Interrupted, run_label

    try:
        summary = run_label(cfg, replica_class=replica_class) if replica_class else run_label(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return None, 2
    except Interrupted as e:
        print(
            f"interrupted: {e.rows} row(s) of this run are saved in {e.output}; continue with: {resume_command(argv)}",
            file=sys.stderr,
        )
        return None, e.exit_status
    except Exception as e:  # the Ray pipeline failed as a whole (e.g. no replica could start)
        print(f"error: the labeling job failed: {type(e).__name__}: {e}", file=sys.stderr)
        return None, 1
    print(summary.line(), flush=True)
    if summary.inputs and summary.total_errors == summary.total_rows:  # this sitting's rows are in the output
        print("error: every input failed (see the error column)", file=sys.stderr)
        return summary, 1
    return summary, 0


def main(argv: list[str] | None = None) -> int:
    from pipelines.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run(cfg, argv)[1]


if __name__ == "__main__":
    sys.exit(main())
