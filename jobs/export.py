"""Export a label run's rows to the format a review tool or a trainer reads, with thresholds and NMS.

    python -m jobs.export --predictions /abs/out --format yolo --output /abs/yolo --min-score 0.3 --nms 0.5
    python -m jobs.export --predictions s3://bucket/labels --format labelstudio --output /abs/ls \\
                          --class-thresholds "cat=0.4,dog=0.6" --document-root /data
    python -m jobs.export --predictions /abs/out --format coco --output /abs/coco --class-agnostic-nms --nms 0.7

--predictions is a `jobs.label` output folder (local or URI); --output a folder (local or URI). Formats:
coco (coco_results.json, coco_dataset.json), yolo (images/, labels/, data.yaml; masks as polygons), voc
(images/, annotations/*.xml), labelstudio (tasks.json with boxes and brush masks as predictions with scores, and
label_config.xml). Classes are those the run's detect/segment prompts asked for, in that order (--classes picks
others); objects with another label are left out and counted. --class-thresholds override --min-score for their
classes. Exit status: 0 on success, 2 for a bad argument or an unreadable run.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.cli import Parser, UsageError, add_spec_arguments, command_parser, fail, spec_from_args


def build_parser() -> Parser:
    """The export command line; the object filter's options come from labeling.ObjectFilter's fields."""
    from exports import FORMATS
    from labeling.filters import ObjectFilter

    p = command_parser("python -m jobs.export", __doc__)
    p.add_argument("--predictions", required=True, help="a jobs.label output folder (local or URI)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", required=True, help="folder (local or URI) to write the export into")
    p.add_argument("--classes", help='classes to export, "cat ; dog" (default: those the run asked for)')
    add_spec_arguments(p, ObjectFilter, title="objects kept")
    p.add_argument("--document-root", help="labelstudio: Label Studio's LOCAL_FILES_DOCUMENT_ROOT for local images")
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.export`: one export of an earlier run; prints its counts as JSON."""
    args = build_parser().parse_args(argv)
    try:
        counts = export(args)
    except UsageError as e:
        return fail(str(e))
    print(json.dumps(counts))
    return 0


def export(args: argparse.Namespace) -> dict:
    """Write the export the arguments ask for; UsageError for a run or an output that cannot be used."""
    from labeling.filters import ObjectFilter
    from pipelines.finish import export_input, labeled_image_ids, object_classes, write_export
    from pipelines.output import OutputError, OutputFolder
    from sources import read_record
    from storage import StorageError
    from tasks import parse_classes

    try:
        run = OutputFolder(args.predictions)
        if not run.parts.parts():
            raise UsageError(f"--predictions {args.predictions}: no committed Parquet parts (is it a label run?)")
        target = OutputFolder(args.output).root
        if target.is_file():
            raise UsageError(f"--output {args.output}: is a file, not a folder")
        object_filter = spec_from_args(ObjectFilter, args)
        source = read_record(run.root)
    except (OutputError, StorageError, ValueError) as e:
        raise UsageError(str(e)) from None
    classes = parse_classes(args.classes) if args.classes else object_classes([], run)
    if not classes:
        raise UsageError(f"--predictions {args.predictions}: the run has no detect/segment rows (give --classes)")
    settings = json.loads(run.root.join("run.json").read_text()) if run.root.join("run.json").is_file() else {}
    model_version = settings.get("checkpoint", "").rstrip("/").rsplit("/", 1)[-1]
    with source.images(labeled_image_ids(run)) as read_image:
        job = export_input(run, source, classes, model_version, object_filter, read_image, args.document_root)
        return write_export(args.format, job, target)


if __name__ == "__main__":
    sys.exit(main())
