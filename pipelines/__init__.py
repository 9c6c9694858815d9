"""Ray Data pipelines: sources (folder, COCO, manifest), decoding, model replicas, Parquet and COCO outputs.

`pipelines.label.run_label(LabelConfig(...))` is the whole job; `python -m jobs.label` is its command line.
"""
