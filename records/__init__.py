"""Training records from the datasets people have: COCO, YOLO, Pascal VOC, Label Studio reviews, this toolkit's
own label rows and referring-expression tables, turned into the (image, prefix, suffix) records that
`jobs.finetune` reads (`python -m jobs.make_records`).

    base.py         Item / Obj (an image and its objects) and Problems (what was left out, by kind)
    coco.py         COCO instances files (boxes, polygons, RLE; crowds left out)
    yolo.py         YOLO data.yaml + labels/*.txt (boxes and polygons)
    voc.py          Pascal VOC XML (boxes, polygons)
    labelstudio.py  Label Studio JSON exports (the reviewed annotations, not the predictions)
    predictions.py  label rows of `jobs.label`, filtered by score and NMS (pseudo-labels)
    referring.py    tables of referring expressions (image, expression, box and/or mask)
    build.py        classes, prompts, object order, <seg> codes through the VQ-VAE, splits, writing
"""

from records.base import Item, Obj, Problems
from records.build import RecordBuilder, RecordOptions, parse_class_map, split_by_image, write_records

__all__ = ["Item", "Obj", "Problems", "RecordBuilder", "RecordOptions", "parse_class_map", "split_by_image",
           "write_records"]  # fmt: skip
