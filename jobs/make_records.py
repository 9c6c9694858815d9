"""Training records (image, prefix, suffix) for `jobs.finetune` from the datasets people have.

    python -m jobs.make_records --coco ann.json --images val2017/ --task detect --output /abs/data/train.jsonl
    python -m jobs.make_records --coco ann.json --images imgs/ --task segment --vae vae.npz \\
                                --val-share 0.1 --seed 0 --output /abs/data/train.jsonl   # + train.val.jsonl
    python -m jobs.make_records --yolo data.yaml --classes "person=pedestrian ; car" --per-class --output r.jsonl
    python -m jobs.make_records --voc exports/voc --output r.parquet
    python -m jobs.make_records --labelstudio export.json --document-root /data/photos --output reviewed.jsonl
    python -m jobs.make_records --predictions /abs/label-run --min-score 0.5 --nms 0.5 --output pseudo.jsonl
    python -m jobs.make_records --referring refs.parquet --task segment --vae vae.npz --output refs.jsonl

Give exactly one source. A record's prompt lists every class of the dataset (`detect a ; b`), or one class with
--per-class (plus a --negative-share of prompts for absent classes, whose answer is empty); its answer lists the
objects in --order (class: prompt order, then top to bottom, left to right). --task segment encodes each mask
with the VQ-VAE's encoder (--vae): cropped to its box, 64 x 64, nearest codes. --val-share F splits by image into
--output and --val-output (default: OUTPUT with `.val` before its suffix). JSONL image paths are relative to the
file. Label Studio: only reviewed annotations count (not predictions); skipped tasks are left out;
`/data/local-files/?d=REL` images are found under --document-root (the flag `jobs.export` writes paths with).

Bad input (an unknown category id, a polygon with fewer than 3 points, a box outside its image, a missing image,
a crowd region) is left out and counted, one line per kind. Exit status: 0 when records were written, 1 when no
record could be made, 2 for a bad argument or an unreadable file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.cli import UsageError, check_new_file, command_parser, fail, unit_interval
from tasks import CLASS_TASKS

SOURCES = ("coco", "yolo", "voc", "labelstudio", "predictions", "referring")


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m jobs.make_records", __doc__)
    src = p.add_argument_group("source (exactly one)")
    src.add_argument("--coco", metavar="ANN.json", help="COCO instances file (boxes, polygons, RLE)")
    src.add_argument("--images", help="image folder of --coco (default: the annotation file's folder)")
    src.add_argument("--yolo", metavar="data.yaml", help="YOLO dataset (boxes and segmentation polygons)")
    src.add_argument("--voc", metavar="DIR", help="Pascal VOC folder (XML annotations and images)")
    src.add_argument("--labelstudio", metavar="EXPORT.json", help="Label Studio JSON export")
    src.add_argument("--document-root", help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT (for /data/local-files/)")
    src.add_argument("--predictions", metavar="OUT", help="a jobs.label output folder (pseudo-labels)")
    src.add_argument("--referring", metavar="TABLE", help="Parquet/CSV/JSONL of image, expression, box, mask")
    rec = p.add_argument_group("records")
    rec.add_argument("--output", required=True, help=".jsonl or .parquet file to write")
    rec.add_argument("--task", choices=CLASS_TASKS, default="detect", help="(default detect)")
    rec.add_argument("--classes", help='keep, rename, drop: "person=pedestrian ; car" (default: every label)')
    rec.add_argument("--per-class", action="store_true", help="one prompt per class instead of one listing all")
    rec.add_argument(
        "--negative-share",
        type=unit_interval,
        default=0.1,
        help="--per-class: chance that an absent class gets a prompt with an empty answer (default 0.1)",
    )
    rec.add_argument(
        "--subsets",
        type=int,
        default=0,
        metavar="N",
        help="also N records per image prompting a random subset of the classes (default 0)",
    )
    rec.add_argument(
        "--order",
        choices=("class", "position", "source", "random"),
        default="class",
        help="object order in an answer (default class; random: reshuffled every epoch)",
    )
    rec.add_argument("--vae", help="vae.npz whose encoder turns masks into <seg> codes (needed for segment)")
    rec.add_argument("--val-share", type=unit_interval, default=0.0, help="share of images for validation")
    rec.add_argument("--val-output", help="validation file (default: OUTPUT with .val before the suffix)")
    rec.add_argument("--seed", type=int, default=0, help="split and negative-prompt seed (default 0)")
    flt = p.add_argument_group("pseudo-labels (--predictions)")
    flt.add_argument("--min-score", type=unit_interval, default=0.0, help="drop objects scoring below this")
    flt.add_argument("--class-thresholds", help="per-class minimum scores, e.g. 'cat=0.4,dog=0.6'")
    flt.add_argument("--nms", type=float, metavar="IOU", help="drop boxes overlapping a better one by this IoU")
    flt.add_argument("--class-agnostic-nms", action="store_true", help="NMS across classes")
    return p  # fmt: skip


def read_items(args: argparse.Namespace, problems):
    """The Items of the one source given; UsageError for a file that cannot be read at all."""
    from records import coco, labelstudio, predictions, referring, voc, yolo

    given = [s for s in SOURCES if getattr(args, s)]
    if len(given) != 1:
        raise UsageError(f"give exactly one source ({', '.join('--' + s for s in SOURCES)}), got {len(given)}")
    source = given[0]
    path = getattr(args, source)
    if source != "predictions" and not Path(path).exists():
        raise UsageError(f"--{source} {path}: no such file or folder")
    try:
        if source == "coco":
            return coco.coco_items(path, args.images, problems, masks=args.task == "segment")
        if source == "yolo":
            return yolo.yolo_items(path, problems)
        if source == "voc":
            return voc.voc_items(path, problems)
        if source == "labelstudio":
            return labelstudio.labelstudio_items(path, args.document_root, problems)
        if source == "referring":
            return referring.referring_items(path, problems)
        from labeling import ObjectFilter, parse_class_thresholds

        thresholds = parse_class_thresholds(args.class_thresholds)
        object_filter = ObjectFilter(args.min_score, thresholds, args.nms, args.class_agnostic_nms)
        return predictions.prediction_items(path, object_filter, problems)
    except (OSError, ValueError, KeyError, TypeError) as e:  # unreadable JSON / YAML / Parquet, a missing key
        raise UsageError(f"--{source} {path}: cannot read it ({type(e).__name__}: {e})") from None


def dataset_classes(args: argparse.Namespace) -> list[str]:
    """The source's own class order where it has one (COCO categories by id, YOLO names by index)."""
    import json

    if args.coco:
        categories = json.loads(Path(args.coco).read_text()).get("categories", [])
        return [str(c["name"]) for c in sorted(categories, key=lambda c: int(c["id"]))]
    if args.yolo:
        import yaml

        names = (yaml.safe_load(Path(args.yolo).read_text()) or {}).get("names", [])
        return [str(names[k]) for k in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]
    return []


def val_path(output: Path, given: str | None) -> Path:
    return Path(given) if given else output.with_name(f"{output.stem}.val{output.suffix}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from records import Problems, RecordBuilder, RecordOptions, parse_class_map, split_by_image, write_records

    try:
        output = check_new_file(args.output, "--output")
        if output.suffix not in (".jsonl", ".parquet"):
            raise UsageError(f"--output {output}: expected a .jsonl or .parquet file")
        validation = val_path(output, args.val_output) if args.val_share else None
        if validation is not None:
            check_new_file(validation, "--val-output")
        encoder = None
        if args.task == "segment":
            if not args.vae or not Path(args.vae).is_file():
                raise UsageError("--task segment needs --vae FILE (the VQ-VAE whose encoder writes <seg> codes)")
            from decoders import MaskEncoder

            encoder = MaskEncoder.from_npz(args.vae)
        options = RecordOptions(args.task, parse_class_map(args.classes), args.per_class, args.negative_share,
                                args.order, args.seed, args.subsets)  # fmt: skip
        problems = Problems()
        items = read_items(args, problems)
        known = dataset_classes(args)
    except (UsageError, ValueError) as e:
        return fail(str(e))
    builder = RecordBuilder(options, encoder, known)
    classes = builder.class_list(items)
    train_items, val_items = split_by_image(items, args.val_share, args.seed)
    written = []
    for items_, path in ((train_items, output), (val_items, validation)):
        if path is None:
            continue
        built = [builder.build(item, problems) for item in items_]
        records = [r for b in built for r in b.records]
        stats = sum((b.stats for b in built), start=type(built[0].stats)()) if built else {}
        write_records(records, path)
        written.append(len(records))
        print(f"{path}: {len(records)} records of {len(items_)} images, {stats.get('objects', 0)} objects, "
              f"{stats.get('negative records', 0)} with an empty answer"
              + (f", {stats['objects of dropped classes']} objects of dropped classes" if stats.get(
                  "objects of dropped classes") else ""))  # fmt: skip
    print(f"classes ({len(classes)}): {' ; '.join(classes)}")
    for line in problems.lines():
        print(f"left out: {line}")
    return 0 if sum(written) else 1


if __name__ == "__main__":
    sys.exit(main())
