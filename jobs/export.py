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

from jobs.cli import Parser, UsageError, command_parser, fail, unit_interval


def build_parser() -> Parser:
    p = command_parser("python -m jobs.export", __doc__)
    from exports import FORMATS

    p.add_argument("--predictions", required=True, help="a jobs.label output folder (local or URI)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", required=True, help="folder (local or URI) to write the export into")
    p.add_argument("--classes", help='classes to export, "cat ; dog" (default: those the run asked for)')
    p.add_argument("--min-score", type=unit_interval, default=0.0, help="drop objects scoring below this")
    p.add_argument("--class-thresholds", metavar="CLS=S,...", help='per-class minimum scores, e.g. "cat=0.4,dog=0.6"')
    p.add_argument("--nms", type=unit_interval, metavar="IOU", help="drop boxes overlapping a better one above IOU")
    p.add_argument("--class-agnostic-nms", action="store_true", help="NMS across classes, not within each")
    p.add_argument("--document-root", help="labelstudio: Label Studio's LOCAL_FILES_DOCUMENT_ROOT for local images")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        counts = export(args)
    except UsageError as e:
        return fail(str(e))
    print(json.dumps(counts))
    return 0


def export(args: argparse.Namespace) -> dict:
    from exports.base import ExportInput
    from labeling.filters import ObjectFilter, parse_class_thresholds
    from pipelines.finish import object_classes, write_export
    from pipelines.output import OutputError, OutputFolder
    from rows import categories_for
    from storage import StorageError
    from tasks import parse_classes

    try:
        run = OutputFolder(args.predictions)
        if not run.parts.parts():
            raise UsageError(f"--predictions {args.predictions}: no committed Parquet parts (is it a label run?)")
        target = OutputFolder(args.output).root
        if target.is_file():
            raise UsageError(f"--output {args.output}: is a file, not a folder")
        object_filter = ObjectFilter(args.min_score, parse_class_thresholds(args.class_thresholds), args.nms,
                                     args.class_agnostic_nms)  # fmt: skip
    except (OutputError, StorageError, ValueError) as e:
        raise UsageError(str(e)) from None
    classes = parse_classes(args.classes) if args.classes else object_classes([], run)
    if not classes:
        raise UsageError(f"--predictions {args.predictions}: the run has no detect/segment rows (give --classes)")
    source = read_source(run)
    job = ExportInput(
        rows=lambda: run.parts.iter_rows(),
        categories=categories_for(classes, source.categories),
        model_version=json.loads(run.root.join("run.json").read_text()).get("checkpoint", "").rsplit("/", 1)[-1]
        if run.root.join("run.json").is_file()
        else "",
        object_filter=object_filter,
    )
    if args.format == "labelstudio":
        from exports import labelstudio

        return labelstudio.write(job, target, args.document_root)
    return write_export(args.format, job, target, source)


def read_source(run) -> object:
    """The run's source as far as exports need it (a Parquet dataset's location, to read its images back)."""
    from pipelines.sources import Source

    loc = run.root.join("source.json")
    if not loc.is_file():
        return Source("folder", None)
    d = json.loads(loc.read_text())
    if d.get("kind") == "parquet":
        return Source("parquet", None, parquet=d["location"], image_column=d["image_column"],
                      columns=tuple(d.get("columns", ())))  # fmt: skip
    from pipelines.sources import ITEM_SCHEMA

    return Source(d.get("kind", "folder"), ITEM_SCHEMA.empty_table(), tuple(d.get("categories", ())))


if __name__ == "__main__":
    sys.exit(main())
