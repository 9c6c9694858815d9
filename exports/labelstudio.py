"""Label Studio pre-annotations: one task per image with the model's objects as predictions to review.

    tasks.json          [{"data": {"image": URL}, "predictions": [{"model_version", "score", "result": [...]}]}]
    label_config.xml    a labeling interface whose names match the predictions (import it with the tasks)

Boxes are `rectanglelabels` in percent of the image with the object's `score`; masks are `brushlabels` in Label
Studio's own run-length encoding, made by label-studio-sdk's converter (`pip install "paligemma-batch[labelstudio]"`).
The task's score is the mean of its objects' scores, so Label Studio can sort the weakest predictions first.

Image URLs: a URI (s3://, gs://) is kept for Label Studio's cloud storage to resolve; a local path becomes
`/data/local-files/?d=PATH` with PATH relative to `document_root` (Label Studio's
LOCAL_FILES_DOCUMENT_ROOT) when given, absolute otherwise.
"""

from __future__ import annotations

import json
import os
from xml.sax.saxutils import quoteattr

import numpy as np

from exports.base import ExportInput, object_arrays
from storage import Location, is_uri

BOX_CONTROL, MASK_CONTROL, IMAGE = "label", "mask", "image"


def image_url(path: str, document_root: str | None) -> str:
    if is_uri(path):
        return path
    if document_root:
        path = os.path.relpath(os.path.abspath(path), os.path.abspath(document_root))
    return "/data/local-files/?d=" + path.lstrip("/")


def label_config(names: list[str]) -> str:
    labels = "".join(f"\n    <Label value={quoteattr(n)}/>" for n in names)
    return (
        "<View>\n"
        f'  <Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>\n'
        f'  <RectangleLabels name="{BOX_CONTROL}" toName="{IMAGE}">{labels}\n  </RectangleLabels>\n'
        f'  <BrushLabels name="{MASK_CONTROL}" toName="{IMAGE}">{labels}\n  </BrushLabels>\n'
        "</View>\n"
    )


def task_for(row, job: ExportInput, classes: dict[str, int]) -> tuple[dict, int]:
    try:
        from label_studio_sdk.converter.brush import mask2rle
    except ImportError as e:  # checked by the job before any work; kept for direct callers
        raise RuntimeError(
            'the labelstudio export needs label-studio-sdk: pip install "paligemma-batch[labelstudio]"'
        ) from e

    names = [c["name"] for c in job.categories]
    xyxy, class_id, confidence, masks, left_out = object_arrays(row, classes, with_masks=True)
    w, h = row["width"], row["height"]
    results = []
    for i, (box, cid, score) in enumerate(zip(xyxy, class_id, confidence, strict=True)):
        x0, y0, x1, y1 = (float(v) for v in box)
        common = {"to_name": IMAGE, "original_width": w, "original_height": h, "image_rotation": 0,
                  "score": float(score)}  # fmt: skip
        results.append(
            common
            | {
                "id": f"{row['image_id']}-{i}",
                "type": "rectanglelabels",
                "from_name": BOX_CONTROL,
                "value": {
                    "x": 100.0 * x0 / w,
                    "y": 100.0 * y0 / h,
                    "width": 100.0 * (x1 - x0) / w,
                    "height": 100.0 * (y1 - y0) / h,
                    "rotation": 0,
                    "rectanglelabels": [names[cid]],
                },
            }
        )
        if masks is not None and masks[i].any():
            rle = mask2rle(masks[i].astype(np.uint8) * 255)
            results.append(
                common
                | {
                    "id": f"{row['image_id']}-{i}-mask",
                    "type": "brushlabels",
                    "from_name": MASK_CONTROL,
                    "value": {"format": "rle", "rle": [int(v) for v in rle], "brushlabels": [names[cid]]},
                }
            )
    prediction = {
        "model_version": job.model_version,
        "score": float(np.mean(confidence)) if len(confidence) else 0.0,
        "result": results,
    }
    task = {"data": {IMAGE: image_url(row["path"], job.document_root), "image_id": int(row["image_id"])},
            "predictions": [prediction]}  # fmt: skip
    return task, left_out


def write(job: ExportInput, out: Location) -> dict:
    out.mkdir()
    classes = job.class_index()
    counts = {"images": 0, "objects": 0, "left_out": 0}
    with out.join("tasks.json").open_output() as stream:
        stream.write(b"[")
        for row in job.labeled_rows():
            task, left_out = task_for(row, job, classes)
            stream.write((b",\n" if counts["images"] else b"") + json.dumps(task).encode("utf-8"))
            counts["images"] += 1
            counts["objects"] += sum(r["type"] == "rectanglelabels" for r in task["predictions"][0]["result"])
            counts["left_out"] += left_out
        stream.write(b"]\n")
    out.join("label_config.xml").write_text(label_config([c["name"] for c in job.categories]))
    return counts
