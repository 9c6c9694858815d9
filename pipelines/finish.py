"""After the rows: COCO files, the exports asked for, previews and the summary, each streaming over the parts.

Nothing here holds the run in memory: the rows are read one part at a time (rows.parts), or an image's rows
together through a grouping pass (rows.grouping), as often as an export needs (a COCO dataset file lists images,
then annotations), so the driver's memory stays flat in the number of rows, resumed runs included.
"""

from __future__ import annotations

import io
from dataclasses import asdict

import numpy as np

from exports import ExportInput, writer
from labeling.filters import ObjectFilter
from pipelines.output import OutputFolder
from pipelines.summary import Summary
from rows import categories_for
from rows.grouping import rows_by_image
from sources import ImageReader, Source
from storage import Location
from tasks import Task, TaskLookup


def object_classes(tasks: list[Task], out: OutputFolder) -> list[str]:
    """Class names of the job's object tasks, then of any other object prompts in the output."""
    task_for = TaskLookup(tasks)
    classes = [c for t in tasks for c in getattr(t, "classes", ())]
    seen: set[str] = set()
    for table in out.parts.iter_tables(["prompt"]):
        for prompt in table["prompt"].to_pylist():
            if prompt not in seen:
                seen.add(prompt)
                task = task_for(prompt)
                if task.kind == "objects":
                    classes.extend(getattr(task, "classes", ()))
    return list(dict.fromkeys(classes))


def labeled_image_ids(out: OutputFolder) -> np.ndarray:
    """Ids of the images with at least one row that succeeded (the ones exports and previews read)."""
    ids = [t.filter(t["error"].is_null())["image_id"].to_numpy() for t in out.parts.iter_tables(["image_id", "error"])]
    return np.unique(np.concatenate(ids)) if ids else np.empty(0, np.int64)


def export_input(out: OutputFolder, source: Source, classes: list[str], model_version: str,
                 object_filter: ObjectFilter | None = None, read_image: ImageReader | None = None,
                 document_root: str | None = None) -> ExportInput:  # fmt: skip
    """The one place an export's input is built, for the label job's exports and `jobs.export` alike."""
    return ExportInput.from_store(
        out.parts,
        categories_for(classes, source.categories),
        file_name=source.file_names(),
        read_image=read_image,
        model_version=model_version,
        object_filter=object_filter or ObjectFilter(),
        document_root=document_root,
    )


def write_export(fmt: str, job: ExportInput, target: Location) -> dict:
    """One export format into `target`; returns its counts (images, objects, ...)."""
    return writer(fmt)(job, target)


def finish(job, out: OutputFolder, source: Source, tasks: list[Task], summary: Summary, log, timeline=None) -> None:
    """COCO files for object tasks, --export formats, --previews and summary.json. job: the specs.LabelJob."""
    from exports import coco

    summary.total_rows, summary.total_errors = out.parts.tally()
    summary.files["predictions"] = out.parts.folder.uri
    if out.ray_logs:
        summary.files["ray_logs"] = out.ray_logs
    classes = object_classes(tasks, out)
    model_version = job.replica.checkpoint.rstrip("/").rsplit("/", 1)[-1]
    if classes:
        with source.images(labeled_image_ids(out)) as read_image:
            exported = export_input(out, source, classes, model_version, read_image=read_image,
                                    document_root=job.output.document_root)  # fmt: skip
            report = coco.write_results(exported, out.root.join("coco_results.json"))
            summary.unknown_labels = sum(report.unknown_labels.values())
            summary.files["coco_results"] = out.root.join("coco_results.json").uri
            coco.write_dataset(exported, out.root.join("coco_dataset.json"), job.objects.min_score)
            summary.files["coco_dataset"] = out.root.join("coco_dataset.json").uri
            for fmt in job.output.exports:
                if fmt == "coco":
                    continue  # written above
                target = out.root.join("exports", fmt)
                summary.files[f"export_{fmt}"] = target.uri
                counts = write_export(fmt, exported, target)
                log(f"export {fmt}: {counts['images']} images, {counts['objects']} objects -> {target.uri}")
    elif job.output.exports:
        log("note: --export writes detect/segment rows; this run has no object prompts")
    if job.output.previews:
        summary.files["previews"] = write_previews(out, job.output.previews, classes, source)
    if timeline is not None:
        timeline.mark("outputs written")
    out.write_json("summary.json", asdict(summary))


def write_previews(out: OutputFolder, limit: int, classes: list[str], source: Source) -> str:
    """The first `limit` images that decoded (in the order they were written), with all their rows' objects or
    their answer drawn on."""
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
    task_for = TaskLookup()
    wanted = set(chosen)
    for rows in rows_by_image(out.parts):
        ok = [r for r in rows if not r["error"]]
        if ok and ok[0]["image_id"] in wanted:
            merged[ok[0]["image_id"]] = merge_for_preview(ok, task_for)
    folder = out.root.join("previews")
    folder.mkdir()
    with source.images(np.array(chosen, np.int64)) as read:
        for i, image_id in enumerate(chosen):
            row = merged[image_id]
            buffer = io.BytesIO()
            draw_row(row, classes, read(row)).save(buffer, format="PNG")
            stem = row["path"].replace("\\", "/").rsplit("/", 1)[-1].split("#", 1)[0].rsplit(".", 1)[0]
            folder.join(f"{i:04d}-{stem or image_id}.png").write_bytes(buffer.getvalue())
    return folder.uri


def merge_for_preview(rows: list[dict], task_for: TaskLookup) -> dict:
    """One image's rows as one picture: the first row, with the objects of the image's other rows of the same
    object task (e.g. --per-class) added and their prompts joined."""
    first = dict(rows[0])
    if task_for(first["prompt"]).kind != "objects":
        return first
    for row in rows[1:]:
        if row["task"] == first["task"] and row["objects"] is not None and first["objects"] is not None:
            first["objects"] = [*first["objects"], *row["objects"]]
            first["prompt"] = f"{first['prompt']} | {row['prompt']}"
    return first
