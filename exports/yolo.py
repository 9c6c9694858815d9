"""A YOLO dataset (images/, labels/, data.yaml) written by supervision's `DetectionDataset.as_yolo`, a chunk of
images at a time so that memory stays flat however many rows there are.

Boxes become normalized `class cx cy w h` lines; an object with a mask becomes a polygon line (YOLO's
segmentation format) traced from the mask. Class ids follow the export's class list, from 0.
"""

from __future__ import annotations

import os

from exports.base import ExportInput, LocalStage, write_in_chunks
from storage import Location


def write(job: ExportInput, out: Location) -> dict:
    import supervision as sv

    stage = LocalStage(out)
    images, labels = os.path.join(stage.path, "images"), os.path.join(stage.path, "labels")
    counts = write_in_chunks(job, stage, lambda ds: ds.as_yolo(images, labels))
    names = [c["name"] for c in job.categories]
    sv.DetectionDataset(classes=names, images=[], annotations={}).as_yolo(
        data_yaml_path=os.path.join(stage.path, "data.yaml")
    )
    stage.upload()
    return counts
