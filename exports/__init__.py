"""Auto-label exports people review and train with, built from output rows as they stream:

    coco         coco_results.json (evaluation) and coco_dataset.json (training)      exports/coco.py
    yolo         images/, labels/ (boxes, or polygons for masks), data.yaml            exports/yolo.py
    voc          images/, annotations/*.xml (Pascal VOC)                               exports/voc.py
    labelstudio  tasks.json (pre-annotations: boxes and brush masks with scores)       exports/labelstudio.py

and the object filters (score thresholds, NMS) they share with the label job.
"""

FORMATS = ("coco", "yolo", "voc", "labelstudio")

__all__ = ["FORMATS", "ObjectFilter", "parse_class_thresholds"]
