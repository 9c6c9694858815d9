"""After the rows: COCO files, the exports asked for, previews and the summary, each streaming over the parts.

Nothing here holds the run in memory: the rows are read one part at a time (rows.parts), as often as an export
needs (a COCO dataset file lists images, then annotations), so the driver's memory stays flat in the number of
rows, resumed runs included.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

from exports.base import ExportInput
from pipelines.config import LabelConfig, Summary
from pipelines.output import OutputFolder
from pipelines.sources import Source
from rows import Row, categories_for
from tasks import Task, from_prompt


def object_classes(tasks: list[Task], out: OutputFolder) -> list[str]:
    """Class names of the job's detect/segment tasks, then of any other object prompts in the output."""
    classes = [c for t in tasks for c in getattr(t, "classes", ())]
    seen_prompts: set[str] = set()
    for table in out.parts.iter_tables(["prompt", "task"]):
        for prompt, task in zip(table["prompt"].to_pylist(), table["task"].to_pylist(), strict=True):
            if task in ("detect", "segment") and prompt not in seen_prompts:
                seen_prompts.add(prompt)
                classes.extend(getattr(from_prompt(prompt), "classes", ()))
    return list(dict.fromkeys(classes))


class FileNames:
    """image_id -> the source's file name, looked up in the source's Arrow table (no dict of a million entries)."""

    def __init__(self, source: Source):
        import numpy as np

        self.ids = self.names = None
        if source.items is not None:
            ids = source.items["image_id"].to_numpy()
            order = np.argsort(ids, kind="stable")
            self.ids, self.names, self.order = ids[order], source.items["file_name"], order

    def __call__(self, row: Row) -> str:
        import numpy as np

        if self.ids is None:
            return row["path"]
        i = int(np.searchsorted(self.ids, row["image_id"]))
        if i < len(self.ids) and self.ids[i] == row["image_id"]:
            return self.names[int(self.order[i])].as_py()
        return row["path"]


def export_input(cfg: LabelConfig, out: OutputFolder, source: Source, classes: list[str], object_filter=None):
    from pathlib import Path

    from labeling.filters import ObjectFilter

    def rows() -> Iterator[Row]:
        return out.parts.iter_rows()

    return ExportInput(
        rows=rows,
        categories=categories_for(classes, source.categories),
        file_name=FileNames(source),
        model_version=Path(cfg.checkpoint).name,
        object_filter=object_filter or ObjectFilter(),
    )


def read_row_image(row: Row) -> bytes:
    from storage import read_bytes

    return read_bytes(row["path"])


def finish(cfg: LabelConfig, out: OutputFolder, source: Source, tasks: list[Task], summary: Summary, log) -> None:
    from exports import coco

    summary.total_rows, summary.total_errors = out.parts.tally()
    summary.files["predictions"] = out.parts.folder.uri
    classes = object_classes(tasks, out)
    if classes:
        job = export_input(cfg, out, source, classes)
        report = coco.write_results(job, out.root.join("coco_results.json"))
        summary.unknown_labels = sum(report.unknown_labels.values())
        summary.files["coco_results"] = out.root.join("coco_results.json").uri
        coco.write_dataset(job, out.root.join("coco_dataset.json"), cfg.min_score)
        summary.files["coco_dataset"] = out.root.join("coco_dataset.json").uri
        for fmt in cfg.exports:
            if fmt == "coco":
                continue  # written above
            target = out.root.join("exports", fmt)
            summary.files[f"export_{fmt}"] = target.uri
            counts = write_export(fmt, job, target, source)
            log(f"export {fmt}: {counts['images']} images, {counts['objects']} objects -> {target.uri}")
    elif cfg.exports:
        log("note: --export writes detect/segment rows; this run has no object prompts")
    if cfg.previews:
        summary.files["previews"] = write_previews(out, cfg.previews, classes, source)
    out.write_json("summary.json", asdict(summary))


def write_export(fmt: str, job: ExportInput, target, source: Source) -> dict:
    if fmt == "coco":
        from exports import coco

        counts = coco.write(job, target)
        return {"images": None, "objects": counts["results"]} | counts
    if fmt == "yolo":
        from exports import yolo

        return yolo.write(job, target, image_reader(source))
    if fmt == "voc":
        from exports import voc

        return voc.write(job, target, image_reader(source))
    if fmt == "labelstudio":
        from exports import labelstudio

        return labelstudio.write(job, target)
    raise ValueError(f"unknown export format {fmt!r}")


def image_reader(source: Source):
    """Row -> the image file's bytes: from its path, or from the Parquet dataset for rows that came from one."""
    if source.items is not None:
        return read_row_image
    from pipelines.keys import key_hashes
    from pipelines.parquet_input import parquet_rows

    def read(row: Row) -> bytes:
        found = parquet_rows(source, [row["prompt"]], key_hashes([row["image_id"]], [row["prompt"]]), None)
        return bytes(found[0]["bytes"])

    return read


def write_previews(out: OutputFolder, limit: int, classes: list[str], source: Source) -> str:
    """The first `limit` images that decoded (in the order they were written), with all their rows' objects or
    their answer drawn on."""
    import io

    from pipelines.previews import draw_row

    chosen: list[int] = []
    for table in out.parts.iter_tables(["image_id", "error"]):
        for image_id, error in zip(table["image_id"].to_pylist(), table["error"].to_pylist(), strict=True):
            if error is None and image_id not in chosen:
                chosen.append(image_id)
        if len(chosen) >= limit:
            break
    chosen = chosen[:limit]
    merged: dict[int, dict] = {}
    for row in out.parts.iter_rows():
        if row["image_id"] not in chosen or row["error"]:
            continue
        first = merged.get(row["image_id"])
        if first is None:
            merged[row["image_id"]] = dict(row)
        elif first["task"] == row["task"] and row["objects"] is not None and row["task"] in ("detect", "segment"):
            first["objects"] = [*(first["objects"] or ()), *(row["objects"] or ())]
            first["prompt"] = f"{first['prompt']} | {row['prompt']}"
    folder = out.root.join("previews")
    folder.mkdir()
    read = image_reader(source)
    for i, image_id in enumerate(chosen):
        row = merged[image_id]
        image = draw_row(row, classes, read(row))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        stem = row["path"].replace("\\", "/").rsplit("/", 1)[-1].split("#", 1)[0].rsplit(".", 1)[0] or str(image_id)
        folder.join(f"{i:04d}-{stem}.png").write_bytes(buffer.getvalue())
    return folder.uri
