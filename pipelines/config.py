"""What a labeling run is asked to do (`LabelConfig`) and what it reports (`Summary`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from labeling.images import DEFAULT_MAX_PIXELS


class ConfigError(ValueError):
    """Arguments, checkpoint or output folder that cannot work; the job exits with status 2."""


@dataclass
class LabelConfig:
    checkpoint: str
    output: str
    task: str | None = None
    classes: str | None = None
    per_class: bool = False  # detect/segment: one prompt per class instead of one prompt listing them all
    prompt: str | None = None
    lang: str | None = None
    images: str | None = None  # a folder or URI prefix (or the image root of `coco`)
    coco: str | None = None
    manifest: str | None = None
    parquet: str | None = None  # a Parquet dataset whose rows carry the image bytes
    image_column: str | None = None
    replicas: int = 1
    gpus_per_replica: float | None = None
    cpus_per_replica: float | None = None
    threads_per_replica: int | None = None
    replica_resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources each replica needs
    batch_size: int = 8  # rows a replica is handed at once (a Ray batch)
    in_flight: int | None = None  # rows generating at once in a replica (default: what its device's memory holds)
    compile: bool = False  # compile the replicas' decode step
    device: str | None = None
    dtype: str | None = None
    backend: str = "native"
    vae: str | None = None
    max_new_tokens: int = 64
    resume: bool = False
    retry_errors: tuple[str, ...] = ()  # error kinds (labeling.errors) labeled again on --resume
    retries: int = 2  # times a batch is retried after its replica died, before it is split to find the culprit
    limit: int | None = None
    previews: int = 0
    min_score: float = 0.0
    class_thresholds: dict[str, float] = field(default_factory=dict)
    nms_iou: float | None = None
    class_agnostic_nms: bool = False
    exports: tuple[str, ...] = ()  # formats written at the end (exports/): coco, yolo, voc, labelstudio
    max_pixels: int = DEFAULT_MAX_PIXELS
    rows_per_part: int = 1000
    seconds_per_part: float = 60.0
    address: str | None = None  # Ray cluster to join (None: RAY_ADDRESS / `ray job submit`'s, else a local one)
    progress: bool = True
    verbose: bool = False  # show everything Ray logs (a normal run hides what pipelines.cluster.quiet_ray explains)


@dataclass
class Summary:
    inputs: int  # inputs this run processed
    errors: int
    skipped: int  # already in the output (--resume)
    seconds: float
    images_per_s: float
    total_rows: int  # rows in the output folder, all runs
    total_errors: int = 0  # error rows in the output folder, all runs
    duplicates_dropped: int = 0
    isolated: int = 0  # inputs a replica died on every time, written as error rows
    retried_errors: int = 0  # error rows of earlier runs labeled again (--retry-errors)
    unknown_labels: int = 0
    files: dict = field(default_factory=dict)

    def line(self) -> str:
        text = (
            f"labeled {self.inputs} inputs, {self.errors} errors, {self.images_per_s:.2f} images/s, "
            f"{self.seconds:.1f} s"
        )
        if self.skipped:
            text += f" ({self.skipped} already done, skipped)"
        if self.isolated:
            text += f"; {self.isolated} input(s) killed the replica every time and were set aside as error rows"
        return text
