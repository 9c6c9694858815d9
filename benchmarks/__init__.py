"""Benchmarks that print numbers (they are not tests): `python -m jobs.bench` runs the generation benchmark;
the others run as `python -m benchmarks.NAME`.

    generate           our generate against transformers' on the same weights (fixed and mixed workloads)
    pipeline_overhead  the Ray label job against a plain loop over the same images
    coco               evals.coco against plain pycocotools on a large random set
    training_step      examples/s of the fine-tuning step, eager and compiled
    driver_memory      the label driver's peak memory at 10k / 100k / 1M rows
"""
