"""Pascal VOC: one XML file per image (boxes; a mask as polygons) next to the images, written by supervision's
`DetectionDataset.as_pascal_voc`, a chunk of images at a time."""

from __future__ import annotations

import os

from exports.base import ExportInput, LocalStage, write_in_chunks
from storage import Location


def write(job: ExportInput, out: Location) -> dict:
    stage = LocalStage(out)
    images, annotations = os.path.join(stage.path, "images"), os.path.join(stage.path, "annotations")
    counts = write_in_chunks(job, stage, lambda ds: ds.as_pascal_voc(images, annotations))
    stage.upload()
    return counts
