"""Auto-label exports people review and train with, built from output rows as they stream:

    coco         coco_results.json (evaluation) and coco_dataset.json (training)      exports/coco.py
    yolo         images/, labels/ (boxes, or polygons for masks), data.yaml            exports/yolo.py
    voc          images/, annotations/*.xml (Pascal VOC)                               exports/voc.py
    labelstudio  tasks.json (pre-annotations: boxes and brush masks with scores)       exports/labelstudio.py

Every format is one writer `write(job: ExportInput, out: Location) -> counts` in `WRITERS`; every export writes one
file (or task, or image entry) per image with all of that image's objects, wherever its rows are.
"""

from __future__ import annotations

from collections.abc import Callable

from exports.base import ExportInput
from storage import Location

# format -> the module whose `write` writes it (imported when asked for: supervision and label-studio-sdk are heavy).
WRITERS = {"coco": "exports.coco", "yolo": "exports.yolo", "voc": "exports.voc", "labelstudio": "exports.labelstudio"}
FORMATS = tuple(WRITERS)


def writer(fmt: str) -> Callable[[ExportInput, Location], dict]:
    """The writer of an export format."""
    import importlib

    if fmt not in WRITERS:
        raise ValueError(f"unknown export format {fmt!r}; formats are {', '.join(FORMATS)}")
    return importlib.import_module(WRITERS[fmt]).write


__all__ = ["FORMATS", "WRITERS", "ExportInput", "writer"]
