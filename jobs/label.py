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

from jobs.cli import Parser, add_spec_arguments, command_parser, spec_from_args


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Model, replica, placement and output flags, shared with `python -m jobs.benchmark` (from the specs' fields)."""
    from specs.label import OutputSpec, PlacementSpec, ReplicaSpec, TileSpec

    add_spec_arguments(p, ReplicaSpec, title="model and replicas")
    add_spec_arguments(p, TileSpec, title="tiles: large images, small objects")
    add_spec_arguments(p, PlacementSpec, title="placement on the Ray cluster")
    add_spec_arguments(p, OutputSpec, title="output", exclude=("previews", "exports", "document_root"))


def build_parser() -> Parser:
    """The label job's command line: every option from the fields of specs/label.py."""
    from labeling.filters import ObjectFilter
    from specs.label import OutputSpec, SourceSpec, TaskSpec

    p = command_parser("python -m jobs.label", __doc__)
    add_spec_arguments(p, SourceSpec, title="inputs")
    add_spec_arguments(p, TaskSpec, title="task")
    add_run_arguments(p)
    add_spec_arguments(p, ObjectFilter, title="objects kept (detect/segment)")
    outputs = p.add_argument_group("labeling outputs")
    wanted = ("previews", "exports", "document_root")
    add_spec_arguments(
        outputs, OutputSpec, exclude=tuple(n for n in OutputSpec.__dataclass_fields__ if n not in wanted)
    )
    return p


def config_from_args(args: argparse.Namespace, **source_overrides):
    """The LabelJob a parsed command line asks for; raises SpecError (one line naming the option).
    source_overrides: SourceSpec fields set by the caller (jobs.benchmark's drawn shapes set)."""
    from labeling.filters import ObjectFilter
    from specs.label import LabelJob, OutputSpec, PlacementSpec, ReplicaSpec, SourceSpec, TaskSpec, TileSpec

    return LabelJob(
        source=spec_from_args(SourceSpec, args, **source_overrides),
        tasks=spec_from_args(TaskSpec, args),
        replica=spec_from_args(ReplicaSpec, args),
        output=spec_from_args(OutputSpec, args),
        placement=spec_from_args(PlacementSpec, args),
        objects=spec_from_args(ObjectFilter, args),
        tiles=spec_from_args(TileSpec, args),
    )


def resume_command(argv: list[str] | None) -> str:
    """The command line that continues this run."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--resume" not in args:
        args.append("--resume")
    return "python -m jobs.label " + shlex.join(args)


def run(job, argv: list[str] | None = None, replica_class=None):
    """run_label with the exit-status rules: (summary, 0), (summary, 1) when every input failed, (None, 1 or 2),
    and (None, 130/143) when interrupted."""
    from pipelines.job import Interrupted, run_label
    from specs.fields import SpecError

    try:
        summary = run_label(job, replica_class=replica_class) if replica_class else run_label(job)
    except SpecError as e:
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
    if summary.rows and summary.total_errors == summary.total_rows:  # this sitting's rows are in the output
        print("error: every input failed (see the error column)", file=sys.stderr)
        return summary, 1
    return summary, 0


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.label`: parse, check, run; the exit status (see the module docstring)."""
    from specs.fields import SpecError

    args = build_parser().parse_args(argv)
    try:
        job = config_from_args(args)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run(job, argv)[1]


if __name__ == "__main__":
    sys.exit(main())
