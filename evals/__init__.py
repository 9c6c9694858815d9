"""Evaluation of the toolkit's outputs against ground truth (docs/FORMATS.md, "Metrics"), one module per metric.

coco (COCO mAP through pycocotools or faster-coco-eval), refseg (referring-segmentation mIoU), vqa, anls, ocr,
cider; ground_truth and report tie them to the Parquet rows (rows/); `python -m evals` runs report.
Nothing is imported here, so `import evals.vqa` does not pull in pycocotools or matplotlib.
"""
