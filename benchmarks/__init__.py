"""Benchmarks that print numbers (they are not tests): `python -m jobs.bench` runs the generation benchmark;
the others run as `python -m benchmarks.NAME`.

    generation_speed   our generate against transformers' on the same weights (fixed and mixed workloads)
    decode_costs       where a decode step's time goes here: bandwidth, products per weight layout, steps
    dtype_accuracy     the bundled model's held-out shapes scores in float32 and bfloat16
    gpu                the GPU suite: parity and speed of the 3B sizes in one command (--smoke: on the CPU)
    pipeline_overhead  the Ray label job against a plain loop over the same images
    coco               evals.coco against plain pycocotools on a large random set
    training_step      examples/s of the fine-tuning step, eager and compiled
    driver_memory      the label driver's peak memory at 10k / 100k / 1M rows
    startup            time to the first row and to the end of a label job, by phase, for 1 / 12 / 200 inputs
    export_speed       YOLO export of a Parquet source, before and after its images are read in one pass
    tiling             tiled labeling against squashing on large scenes of small shapes (no Ray)
    large_image        a 12,000 px image labeled with tiles: the job's peak memory per process
    transfer           fine-tuning a class the bundled model never saw: full and LoRA, old classes kept
    second_generator   every shapes skill on the spec drawn by an independent generator (testing/other_shapes.py)

`common` holds what they share (hardware names, timing, sample images, random weights) and imports no Ray.
"""
