"""Evaluation of the toolkit's outputs against ground truth (DESIGN.md §8), one module per metric.

coco (COCO mAP through pycocotools or faster-coco-eval), refseg (referring-segmentation mIoU), vqa, anls, ocr,
cider; convert (output rows -> COCO results), ground_truth, report and `python -m evals` tie them to the
Parquet output. Nothing is imported here, so `import evals.vqa` does not pull in pycocotools or matplotlib.
"""
