"""A label job, as the user asks for it: where the inputs are (`SourceSpec`), what to ask (`TaskSpec`), what a
replica is built from (`ReplicaSpec`), where replicas run (`PlacementSpec`), where rows go (`OutputSpec`), and
which objects to keep (`labeling.ObjectFilter`), brought together and checked against each other in `LabelJob`.

Each is a frozen dataclass that checks its own values when it is made; every option's default and help live on
its field (specs/fields.py), and `python -m jobs.label` / `python -m jobs.benchmark` build their command lines
from them. Nothing here touches a file beyond checking that it exists, nor starts Ray.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from labeling.errors import KINDS, OTHER, parse_kinds
from labeling.filters import ObjectFilter
from labeling.images import DEFAULT_MAX_PIXELS
from specs.fields import SpecError, at_least, check, option

SOURCES = "--images DIR, --coco ANN.json --images DIR, --manifest FILE or --parquet DATASET"
DEVICES = ("cpu", "cuda")


def _backends() -> tuple[str, ...]:
    from labeling.backends import BACKENDS

    return tuple(BACKENDS)


def _task_names() -> tuple[str, ...]:
    from tasks import TASKS

    return tuple(sorted(TASKS))


def _formats() -> tuple[str, ...]:
    from exports import FORMATS

    return FORMATS


def _words(text: str) -> tuple[str, ...]:
    """'yolo, voc' -> ('yolo', 'voc')."""
    return tuple(w.strip() for w in text.split(",") if w.strip())


def parse_resources(text: str) -> dict[str, float]:
    """--replica-resource NAME=AMOUNT (repeatable; AMOUNT defaults to 1) -> {NAME: AMOUNT}."""
    name, sep, amount = text.partition("=")
    try:
        if not name.strip():
            raise ValueError
        return {name.strip(): float(amount) if sep else 1.0}
    except ValueError:
        raise ValueError(f"--replica-resource: expected NAME=AMOUNT, got {text!r}") from None


@dataclass(frozen=True)
class SourceSpec:
    """Where the inputs are: exactly one of a folder, a COCO file (with the folder of its images), a manifest or a
    Parquet dataset of image bytes; local paths or URIs."""

    images: str | None = option(
        None, help="image folder or URI prefix (searched recursively), or the image root of --coco"
    )
    coco: str | None = option(None, help="COCO annotation file: label its images, keep its image and category ids")
    manifest: str | None = option(None, help="Parquet or CSV with a path column, optional prompt and image_id columns")
    parquet: str | None = option(None, help="Parquet dataset (file, folder or URI) whose rows hold the image bytes")
    image_column: str | None = option(None, help="--parquet: the column with the images (default: image)")
    limit: int | None = option(None, help="only the first N inputs of the source (a quick trial)")
    max_pixels: int = option(
        DEFAULT_MAX_PIXELS, help="refuse larger images, before decoding them (Pillow's bomb limit)"
    )

    def __post_init__(self) -> None:
        given = [f for f in ("coco", "manifest", "parquet") if getattr(self, f)]
        if len(given) > 1 or ((self.manifest or self.parquet) and self.images):
            raise SpecError(f"give one source: {SOURCES}")
        if not given and not self.images:
            raise SpecError(f"give a source: {SOURCES}")
        check(
            not self.coco or bool(self.images),
            self,
            "coco",
            "needs --images DIR, the folder its file_names are relative to",
        )
        check(self.image_column is None or bool(self.parquet), self, "image_column", "is for --parquet datasets")
        at_least(self, 1, "limit", "max_pixels")

    def open(self):
        """The source itself (sources/): listed, or its schema read; raises SpecError for a source that cannot be
        used (a missing folder, an unreadable manifest, duplicate ids)."""
        from sources import SourceError, open_source

        try:
            return open_source(self)
        except SourceError as e:
            raise SpecError(str(e)) from e


@dataclass(frozen=True)
class TaskSpec:
    """What to ask: a task with its options, once per input (or once per class with --per-class). Without a
    task every input must bring its own prompt (a manifest's or dataset's `prompt` column)."""

    task: str | None = option(None, help="what to ask (optional when every input has a prompt)", choices=_task_names)
    classes: str | None = option(None, help='detect/segment classes, "cat ; dog" (default for --coco: its categories)')
    per_class: bool = option(False, help="detect/segment: ask for one class per prompt (a row per class)")
    prompt: str | None = option(None, help="the question for --task answer, the whole prompt for --task raw")
    lang: str | None = option(None, help="language for caption/describe/answer (default en)")

    def __post_init__(self) -> None:
        from tasks import TASKS, takes_classes

        check(self.task is None or self.task in TASKS, self, "task", f"must be one of {', '.join(sorted(TASKS))}")
        if self.task is None:
            for name in ("classes", "per_class", "prompt", "lang"):
                check(not getattr(self, name), self, name, "needs --task")
            return
        check(
            not self.per_class or takes_classes(self.task),
            self,
            "per_class",
            f"is for tasks that take classes (detect, segment), not {self.task}",
        )

    def resolve(self, categories: tuple[dict, ...] = ()) -> list:
        """The job's tasks (several with --per-class); [] when every input brings its prompt. A COCO source's
        categories name the classes when --classes is not given."""
        from tasks import takes_classes, task_from_cli

        if self.task is None:
            return []
        classes = self.classes
        if takes_classes(self.task) and not classes and categories:
            classes = " ; ".join(c["name"] for c in categories)
        check(
            not takes_classes(self.task) or bool(classes),
            self,
            "classes",
            f'is required by --task {self.task}, e.g. --classes "cat ; dog"',
        )
        try:
            task = task_from_cli(self.task, classes=classes, prompt=self.prompt, lang=self.lang)
            if self.per_class:
                return [task_from_cli(self.task, classes=[c], lang=self.lang) for c in task.classes]
        except ValueError as e:
            raise SpecError(str(e)) from e
        return [task]


@dataclass(frozen=True)
class TileSpec:
    """Tiled labeling (sliced inference) of large images: each image cut into overlapping tiles, every tile its
    own (image, prompt) pair, the tiles' objects merged back into one row in image pixels (labeling/tiles.py).
    Only object prompts are tiled; other prompts ask about the whole image."""

    tile: int | None = option(
        None,
        metavar="SIZE",
        const=0,
        help="label object prompts tile by tile, tiles of SIZE pixels (without SIZE: the model's resolution)",
    )
    tile_overlap: float = option(0.2, help="how much neighbouring tiles overlap, a share of the tile side")
    tile_full_image: bool = option(
        False, help="also label the whole image, so objects larger than a tile are seen whole"
    )
    tile_merge: str = option(
        "nmm",
        choices=("nmm", "nms"),
        help="objects seen by several tiles: merged into one "
        "(nmm: the union of their boxes and masks) or the best kept (nms)",
    )

    def __post_init__(self) -> None:
        check(self.tile is None or self.tile >= 0, self, "tile", f"must be a number of pixels, got {self.tile}")
        check(0.0 <= self.tile_overlap < 1.0, self, "tile_overlap", f"must be in [0, 1), got {self.tile_overlap}")
        check(self.tile_merge in ("nmm", "nms"), self, "tile_merge", f"must be nmm or nms, got {self.tile_merge!r}")
        for name in ("tile_overlap", "tile_full_image"):
            default = type(self).__dataclass_fields__[name].default
            check(self.tile is not None or getattr(self, name) == default, self, name, "needs --tile")

    @property
    def on(self) -> bool:
        return self.tile is not None

    def config(self, model_size: int):
        """The labeling.tiles.TileConfig for a model of this resolution (None when tiling is off)."""
        from labeling.tiles import TileConfig

        if self.tile is None:
            return None
        return TileConfig(self.tile or model_size, self.tile_overlap, self.tile_full_image, self.tile_merge)

    def settings(self) -> dict | None:
        """What decides a tiled row's content (--resume checks it)."""
        return (
            None
            if self.tile is None
            else {
                "tile": self.tile,
                "overlap": self.tile_overlap,
                "full_image": self.tile_full_image,
                "merge": self.tile_merge,
            }
        )


@dataclass(frozen=True)
class ReplicaSpec:
    """Exactly what one model replica is built from (a Ray actor of the label job, or the isolation worker)."""

    checkpoint: str = option(help="Hugging Face PaliGemma folder (safetensors)")
    backend: str = option(
        "native", help="our model, or transformers' PaliGemmaForConditionalGeneration", choices=_backends
    )
    device: str | None = option(None, help="where replicas run (default cpu)", choices=DEVICES)
    dtype: str | None = option(None, help="float32 (default on a CPU), bf16 (default on a GPU) or fp16")
    vae: str | None = option(None, help="big_vision's vae-oid.npz, to decode segment masks (boxes only without it)")
    adapter: str | None = option(
        None,
        help="a LoRA adapter folder (peft's format, e.g. a fine-tune's best/) merged into the checkpoint's weights",
    )
    max_new_tokens: int = option(64, help="answer length limit")
    batch_size: int = option(8, help="rows handed to a replica at once")
    in_flight: int | None = option(
        None,
        help="rows generating at once in a replica; a finished row's slot takes "
        "the next row at once (default: what the device's memory holds, at most the batch)",
    )
    compile: bool = option(False, help="compile the decode step (slower start, faster steps)")
    threads: int | None = option(
        None,
        flag="--threads-per-replica",
        help="torch threads in a CPU replica (default: the machine's CPUs shared among the replicas)",
    )

    def __post_init__(self) -> None:
        at_least(self, 1, "max_new_tokens", "batch_size", "in_flight", "threads")
        check(
            self.backend in _backends(),
            self,
            "backend",
            f"must be one of {', '.join(_backends())}, got {self.backend!r}",
        )
        check(
            self.device is None or self.device in DEVICES or self.device.startswith("cuda:"),
            self,
            "device",
            f"must be cpu or cuda, got {self.device!r}",
        )
        check(self.vae is None or Path(self.vae).is_file(), self, "vae", f"{self.vae}: file is missing")
        check(self.adapter is None or Path(self.adapter).is_dir(), self, "adapter", f"{self.adapter}: not a folder")
        from model.loading import resolve_dtype

        try:
            resolve_dtype(self.dtype)
        except ValueError as e:
            raise SpecError(f"--dtype: {e}") from None

    @property
    def on_gpu(self) -> bool:
        return (self.device or "cpu").startswith("cuda")

    def absolute(self) -> ReplicaSpec:
        """The same spec with absolute paths: replicas may run in another working directory."""

        def absolute(path: str | None) -> str | None:
            return None if path is None else str(Path(path).absolute())

        return dataclasses.replace(
            self, checkpoint=absolute(self.checkpoint), vae=absolute(self.vae), adapter=absolute(self.adapter)
        )


@dataclass(frozen=True)
class PlacementSpec:
    """Where and how many replicas run on the Ray cluster, and how often a dead one's batch is redone."""

    replicas: int = option(1, help="model replicas, one Ray actor each")
    gpus_per_replica: float | None = option(None, help="GPUs per replica, may be fractional (default 1 on cuda)")
    cpus_per_replica: float | None = option(
        None, help="CPUs Ray reserves per replica (default: 1, less when that would leave no CPU to decode)"
    )
    replica_resources: dict[str, float] = option(
        help="a custom Ray resource each replica needs (places replicas on the nodes that have it); repeatable",
        flag="--replica-resource",
        parse=parse_resources,
        metavar="NAME=AMOUNT",
        repeat=True,
        default_factory=dict,
    )
    retries: int = option(
        2, help="times a batch is redone after its replica died, before it is split to find the input that kills it"
    )
    address: str | None = option(None, help="Ray cluster to join (default: RAY_ADDRESS, else a private local Ray)")

    def __post_init__(self) -> None:
        at_least(self, 1, "replicas")
        at_least(self, 0, "retries")
        check(
            self.cpus_per_replica is None or self.cpus_per_replica > 0,
            self,
            "cpus_per_replica",
            f"must be above 0, got {self.cpus_per_replica}",
        )
        check(
            self.gpus_per_replica is None or self.gpus_per_replica > 0,
            self,
            "gpus_per_replica",
            f"must be above 0 (a fraction packs replicas on one GPU), got {self.gpus_per_replica}",
        )


@dataclass(frozen=True)
class OutputSpec:
    """Where the rows go and what is written at the end."""

    output: str = option(help="output folder or URI (absolute under ray job submit)")
    resume: bool = option(False, help="continue a stopped run: skip inputs already written")
    retry_errors: tuple[str, ...] = option(
        (),
        help="with --resume: label failed rows again (default kinds: read, "
        "generation, replica; or 'all', or a list such as read,decode)",
        parse=parse_kinds,
        const="default",
        metavar="KINDS",
    )
    rows_per_part: int = option(1000, help="rows per Parquet part")
    seconds_per_part: float = option(60.0, help="a part is written at least this often", cli=False)
    previews: int = option(0, help="draw the first N labeled images", metavar="N")
    exports: tuple[str, ...] = option(
        (),
        flag="--export",
        parse=_words,
        metavar="FORMATS",
        help="also write coco, yolo, voc and/or labelstudio, e.g. yolo,voc",
    )
    document_root: str | None = option(
        None,
        help="--export labelstudio: Label Studio's LOCAL_FILES_DOCUMENT_ROOT, "
        "which local image paths are given relative to",
    )
    progress: bool = option(True, flag="--no-progress", negate=True, help="print no progress")
    progress_every: float = option(30.0, help="when the output is not a terminal, a progress line this often (s)")
    verbose: bool = option(False, help="show everything Ray logs, warnings included")

    def __post_init__(self) -> None:
        if isinstance(self.retry_errors, str):  # Python callers may give the command line's text
            object.__setattr__(self, "retry_errors", parse_kinds(self.retry_errors))
        check(
            not self.retry_errors or self.resume,
            self,
            "retry_errors",
            "labels the failed rows of an earlier run again: it needs --resume",
        )
        check(
            all(k in (*KINDS, OTHER) for k in self.retry_errors), self, "retry_errors", f"kinds are {', '.join(KINDS)}"
        )
        unknown = [f for f in self.exports if f not in _formats()]
        check(not unknown, self, "exports", f"unknown format {', '.join(unknown)}; formats are {', '.join(_formats())}")
        check(
            self.document_root is None or "labelstudio" in self.exports,
            self,
            "document_root",
            "is for --export labelstudio",
        )
        at_least(self, 1, "rows_per_part")
        check(self.progress_every > 0, self, "progress_every", f"must be above 0, got {self.progress_every}")
        at_least(self, 0, "previews")


@dataclass(frozen=True)
class LabelJob:
    """Everything a label run is asked to do, checked as a whole."""

    source: SourceSpec
    tasks: TaskSpec
    replica: ReplicaSpec
    output: OutputSpec
    placement: PlacementSpec = dataclasses.field(default_factory=PlacementSpec)
    objects: ObjectFilter = dataclasses.field(default_factory=ObjectFilter)
    tiles: TileSpec = dataclasses.field(default_factory=TileSpec)

    def __post_init__(self) -> None:
        gpus = self.placement.gpus_per_replica
        if not self.replica.on_gpu and gpus:
            raise SpecError("--gpus-per-replica needs --device cuda")

    @property
    def gpus_per_replica(self) -> float | None:
        """GPUs each replica reserves: as asked, 1 on cuda when not given, none on a CPU."""
        if not self.replica.on_gpu:
            return None
        return self.placement.gpus_per_replica or 1.0
