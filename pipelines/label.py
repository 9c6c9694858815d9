"""Label a folder, COCO set or manifest with PaliGemma on Ray Data; `python -m jobs.label` is its command line.

    inputs (driver) ─► from_items ─► map(prepare): read, decode, upright RGB, resize  [CPU tasks]
                    ─► map_batches(Replica): batched generate + task parsing + masks  [actor pool]
                    ─► driver: drop keys already written, Parquet parts (atomic) ─► COCO files, previews, summary

The driver is the only writer. That keeps exactly-once simple: Ray Data redoes the batch of a replica that died
(actors restart, tasks are retried), and whatever reaches the driver is written unless its (image_id, prompt) key
is already on disk or in this run, so neither a retried batch nor a resumed run can duplicate a row. Rows are
small (text and objects), so one writer is not the bottleneck; images and model work stay on the workers.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from pipelines.coco_export import categories_for, dataset_file, results_file
from pipelines.decode import DEFAULT_MAX_PIXELS, prepare
from pipelines.output import OutputFolder
from pipelines.replica import CRASH_ONCE_ENV, ROW_SCHEMA, Replica, task_for_prompt
from pipelines.sources import Source, SourceError, coco_source, folder_source, manifest_source

# Test-only: after writing this many part files the driver SIGKILLs itself (a job killed mid-run, for --resume).
KILL_AFTER_PARTS_ENV = "PALIGEMMA_TEST_KILL_AFTER_PARTS"


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
    images: str | None = None
    coco: str | None = None
    manifest: str | None = None
    replicas: int = 1
    gpus_per_replica: float | None = None
    cpus_per_replica: float | None = None
    threads_per_replica: int | None = None
    batch_size: int = 8
    device: str | None = None
    dtype: str | None = None
    backend: str = "native"
    vae: str | None = None
    max_new_tokens: int = 64
    resume: bool = False
    limit: int | None = None
    previews: int = 0
    min_score: float = 0.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    rows_per_part: int = 1000
    seconds_per_part: float = 60.0
    progress: bool = True


@dataclass
class Summary:
    inputs: int  # inputs this run processed
    errors: int
    skipped: int  # already in the output (--resume)
    seconds: float
    images_per_s: float
    total_rows: int  # rows in the output folder, all runs
    duplicates_dropped: int = 0
    unknown_labels: int = 0
    files: dict = field(default_factory=dict)

    def line(self) -> str:
        text = (
            f"labeled {self.inputs} inputs, {self.errors} errors, {self.images_per_s:.2f} images/s, "
            f"{self.seconds:.1f} s"
        )
        if self.skipped:
            text += f" ({self.skipped} already done, skipped)"
        return text


# ---- checking the request before any work starts ---------------------------------------------------------------


def load_source(cfg: LabelConfig) -> Source:
    given = [name for name in ("coco", "manifest") if getattr(cfg, name)]
    if len(given) > 1 or (cfg.manifest and cfg.images):
        raise ConfigError("give one source: --images DIR, --coco ANN.json --images DIR, or --manifest FILE")
    try:
        if cfg.coco:
            if not cfg.images:
                raise ConfigError("--coco needs --images DIR, the folder its file_names are relative to")
            return coco_source(cfg.coco, cfg.images)
        if cfg.manifest:
            return manifest_source(cfg.manifest)
        if cfg.images:
            return folder_source(cfg.images)
    except SourceError as e:
        raise ConfigError(str(e)) from e
    raise ConfigError("give a source: --images DIR, --coco ANN.json --images DIR, or --manifest FILE")


def task_spec(cfg: LabelConfig, source: Source) -> dict:
    """The job's task as `task_from_cli` arguments. A COCO source without --classes uses its category names."""
    from tasks import task_from_cli

    if cfg.task is None:
        if source.kind == "manifest" and all(item.prompt for item in source.items):
            return {"name": "raw", "prompt": "unused: every manifest row has its own prompt"}
        raise ConfigError("--task is required (a manifest without a prompt on every row needs it too)")
    classes = cfg.classes
    if cfg.task in ("detect", "segment") and not classes and source.categories:
        classes = " ; ".join(c["name"] for c in source.categories)
    spec = {"name": cfg.task, "classes": classes, "prompt": cfg.prompt, "lang": cfg.lang}
    if cfg.per_class and cfg.task not in ("detect", "segment"):
        raise ConfigError(f"--per-class is for --task detect or segment, not {cfg.task}")
    try:
        task_from_cli(**spec)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return spec


def check_checkpoint(cfg: LabelConfig) -> int:
    """Read config.json and tokenizer.json only (the replicas load the weights); returns the image size."""
    from model import CheckpointError
    from model.image_processing import ImageProcessor
    from model.loading import read_config, resolve_dtype, weight_files
    from model.tokenizer import PromptTokenizer

    folder = Path(cfg.checkpoint)
    try:
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: not a folder")
        config = read_config(folder)
        PromptTokenizer.from_file(folder / "tokenizer.json")
        weight_files(folder)
        resolve_dtype(cfg.dtype)
        return ImageProcessor.from_pretrained(folder, config.vision.image_size).size
    except (CheckpointError, ValueError) as e:
        raise ConfigError(f"--checkpoint: {e}") from e


def check_resources(cfg: LabelConfig) -> None:
    if cfg.backend not in ("native", "transformers"):
        raise ConfigError(f"--backend must be native or transformers, got {cfg.backend!r}")
    if cfg.replicas < 1 or cfg.batch_size < 1 or cfg.max_new_tokens < 1:
        raise ConfigError("--replicas, --batch-size and --max-new-tokens must be at least 1")
    device = cfg.device or "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"--device must be cpu or cuda, got {cfg.device!r}")
    if device.startswith("cuda"):
        if cfg.gpus_per_replica is None:
            cfg.gpus_per_replica = 1.0
        if not cfg.gpus_per_replica > 0:
            raise ConfigError("--device cuda needs --gpus-per-replica > 0 (a fraction packs replicas on one GPU)")
    elif cfg.gpus_per_replica:
        raise ConfigError("--gpus-per-replica needs --device cuda")
    if cfg.vae and not Path(cfg.vae).is_file():
        raise ConfigError(f"--vae {cfg.vae}: file is missing")
    if cfg.previews < 0 or (cfg.limit is not None and cfg.limit < 1):
        raise ConfigError("--previews must be 0 or more and --limit at least 1")


def settings_for_resume(cfg: LabelConfig, spec: dict) -> dict:
    """What decides a row's content; --resume refuses to mix rows made with other values of these."""
    return {
        "checkpoint": str(Path(cfg.checkpoint).absolute()),
        "backend": cfg.backend,
        "task": spec,
        "per_class": cfg.per_class,
        "max_new_tokens": cfg.max_new_tokens,
        "dtype": cfg.dtype,
        "vae": None if cfg.vae is None else str(Path(cfg.vae).absolute()),
    }


# ---- running it -------------------------------------------------------------------------------------------------


def cpus_per_replica(cfg: LabelConfig, cluster_cpus: float) -> float:
    """CPU reservation of a replica. A GPU replica needs little CPU. A CPU replica takes at most one CPU and
    always leaves one free for the decode tasks: on a 2-CPU machine 2 replicas at 1 CPU each plus the read task
    deadlock (DESIGN.md §10), so they get 0.5 each."""
    if cfg.cpus_per_replica is not None:
        return cfg.cpus_per_replica
    if cfg.gpus_per_replica:
        return 1.0
    return max(0.1, min(1.0, (cluster_cpus - 1) / cfg.replicas))


# Memory a decode task reserves: a 24-megapixel photo decoded to RGB, plus the copy EXIF rotation makes. It also
# keeps Ray Data from fusing the decode stage into the replicas' actor pool (it fuses maps whose remote args match,
# e.g. 0.5 CPU each on a 2-CPU machine), which would decode inside the model actor and leave a GPU idle meanwhile.
DECODE_MEMORY = 256 * 2**20


def input_blocks(rows: list[dict], batch_size: int, replicas: int) -> list[pa.Table]:
    """The inputs as Arrow tables of a whole number of batches each, one Ray block per table.

    A block that is not a multiple of the batch size makes a short batch (blocks of 12 at batch size 8 run as
    8 + 4, wasting a third of the work), and a replica's rows reach the driver a block at a time. So blocks hold
    1 to 16 batches: enough blocks to keep every replica busy (8 per replica), few enough for small overheads.
    """
    per_replica = math.ceil(len(rows) / (batch_size * 8 * replicas))
    size = batch_size * max(1, min(16, per_replica))
    return [pa.Table.from_pylist(rows[i : i + size]) for i in range(0, len(rows), size)]


def build_dataset(cfg: LabelConfig, rows: list[dict], spec: dict, image_size: int):
    import ray

    cluster_cpus = float(ray.cluster_resources().get("CPU", 1))
    replica_cpus = cpus_per_replica(cfg, cluster_cpus)
    ds = ray.data.from_arrow(input_blocks(rows, cfg.batch_size, cfg.replicas))
    ds = ds.map(
        prepare,
        fn_kwargs={"size": image_size, "max_pixels": cfg.max_pixels},
        num_cpus=0.5,
        memory=DECODE_MEMORY,
    )
    replica_args = {
        "checkpoint": str(Path(cfg.checkpoint).absolute()),
        "task": spec,
        "backend": cfg.backend,
        "device": cfg.device,
        "dtype": cfg.dtype,
        "vae": None if cfg.vae is None else str(Path(cfg.vae).absolute()),
        "max_new_tokens": cfg.max_new_tokens,
        # torch in an actor gets OMP_NUM_THREADS = its CPU reservation (at least 1); CPU replicas instead share
        # their machine's cores (the replica divides os.cpu_count() there by the replica count).
        "threads": cfg.threads_per_replica or (None if cfg.gpus_per_replica else -cfg.replicas),
        "crash_once": os.environ.get(CRASH_ONCE_ENV) or None,
    }
    return ds.map_batches(
        Replica,
        fn_constructor_kwargs=replica_args,
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.replicas),
        num_cpus=replica_cpus,
        num_gpus=cfg.gpus_per_replica or None,
        # No max_restarts / max_task_retries here: Ray Data's actor pools default to -1 for both (restart a dead
        # replica, redo its batch), which is what exactly-once needs; tests/test_pipeline_label.py checks it.
    )


class PartWriter:
    """Buffers rows from the pipeline and writes a part when it holds rows_per_part rows or is seconds_per_part
    old; drops keys already written."""

    def __init__(self, out: OutputFolder, done: set, rows_per_part: int, seconds_per_part: float):
        self.out, self.seen = out, done
        self.rows_per_part, self.seconds_per_part = rows_per_part, seconds_per_part
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.since = time.monotonic()
        self.rows = self.errors = self.duplicates = 0
        self.started: float | None = None  # when the pipeline started (after Ray's own start-up)
        kill_after = os.environ.get(KILL_AFTER_PARTS_ENV)
        self.kill_after = int(kill_after) if kill_after else None

    def add(self, table: pa.Table) -> int:
        keys = list(zip(table.column("image_id").to_pylist(), table.column("prompt").to_pylist(), strict=True))
        keep = []
        for i, key in enumerate(keys):
            if key in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(key)
            keep.append(i)
        if len(keep) < len(keys):
            table = table.take(keep)
        if table.num_rows:
            self.buffer.append(table)
            self.buffered += table.num_rows
            self.rows += table.num_rows
            self.errors += table.num_rows - table.column("error").null_count
        if self.buffered >= self.rows_per_part or time.monotonic() - self.since >= self.seconds_per_part:
            self.flush()
        return table.num_rows

    def flush(self) -> None:
        self.since = time.monotonic()
        if not self.buffer:
            return
        table = pa.concat_tables(self.buffer)
        self.buffer, self.buffered = [], 0
        self.out.write_part(table)
        if self.kill_after is not None and self.out.written_parts >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


def run_rows(cfg: LabelConfig, rows: list[dict], spec: dict, image_size: int, writer: PartWriter) -> None:
    """Run the Ray pipeline over the rows to do and hand every output batch to the writer."""
    import ray

    started_ray = False
    if not ray.is_initialized():
        # Under `ray job submit` (or with RAY_ADDRESS set) this joins the cluster; otherwise it starts a local one.
        ray.init()
        started_ray = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = cfg.progress
        ctx.enable_operator_progress_bars = cfg.progress
        ds = build_dataset(cfg, rows, spec, image_size)
        writer.started = time.perf_counter()
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            writer.add(table)
        writer.flush()
    finally:
        writer.flush()
        if started_ray:
            ray.shutdown()


def run_label(cfg: LabelConfig, log=None) -> Summary:
    """Check everything, label what is not done yet, then write COCO files, previews and the summary."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    check_resources(cfg)
    source = load_source(cfg)
    spec = task_spec(cfg, source)
    image_size = check_checkpoint(cfg)
    if cfg.task == "segment" and not cfg.vae:
        log("note: --task segment without --vae gives boxes only (masks need big_vision's vae-oid.npz)")
    out = OutputFolder(cfg.output)
    try:
        out.prepare(settings_for_resume(cfg, spec), cfg.resume)
    except ValueError as e:
        raise ConfigError(str(e)) from e

    from tasks import task_from_cli

    task = task_from_cli(**spec)
    if cfg.per_class:
        default_prompts = [task_from_cli(**spec | {"classes": c}).prompt() for c in task.classes]
    else:
        default_prompts = [task.prompt()]
    done = out.done_keys() if cfg.resume else set()
    todo, skipped = [], 0
    items = source.items[: cfg.limit] if cfg.limit else source.items
    for item in items:
        for prompt in [item.prompt] if item.prompt else default_prompts:
            if (item.image_id, prompt) in done:
                skipped += 1
                continue
            todo.append({"image_id": item.image_id, "path": item.path, "prompt": prompt})
    if skipped:
        log(f"--resume: {skipped} of {len(items)} inputs are already in {out.root}, {len(todo)} to do")

    writer = PartWriter(out, set(done), cfg.rows_per_part, cfg.seconds_per_part)
    start = time.perf_counter()
    if todo:
        run_rows(cfg, todo, spec, image_size, writer)
    end = time.perf_counter()
    seconds = end - start
    # images/s over the pipeline's run, not Ray's start-up (seconds, the job's wall time, includes that)
    pipeline_seconds = end - (writer.started or start)

    summary = Summary(
        inputs=writer.rows,
        errors=writer.errors,
        skipped=skipped,
        seconds=round(seconds, 3),
        images_per_s=round(writer.rows / pipeline_seconds, 3) if pipeline_seconds > 0 and writer.rows else 0.0,
        total_rows=0,
        duplicates_dropped=writer.duplicates,
    )
    finish(cfg, out, source, spec, summary, log)
    return summary


def finish(cfg: LabelConfig, out: OutputFolder, source: Source, spec: dict, summary: Summary, log) -> None:
    rows = out.read_rows().to_pylist()
    summary.total_rows = len(rows)
    summary.files["predictions"] = str(out.parts)
    classes = object_classes(spec, rows)
    if classes:
        categories = categories_for(classes, source.categories)
        results, unknown = results_file(rows, categories)
        summary.unknown_labels = unknown
        file_names = {item.image_id: item.file_name for item in source.items}
        summary.files["coco_results"] = str(out.write_json("coco_results.json", results))
        dataset = dataset_file(rows, categories, file_names, cfg.min_score)
        summary.files["coco_dataset"] = str(out.write_json("coco_dataset.json", dataset))
    if cfg.previews:
        summary.files["previews"] = str(write_previews(out.root / "previews", rows, cfg.previews, classes))
    out.write_json("summary.json", asdict(summary))


def object_classes(spec: dict, rows: list[dict]) -> list[str]:
    """Class names of the detect/segment prompts in the output, the job's --classes first; [] for text tasks."""
    from tasks import task_from_cli

    classes: list[str] = []
    if spec["name"] in ("detect", "segment"):
        classes.extend(task_from_cli(**spec).classes)
    for prompt in {r["prompt"] for r in rows}:
        task = task_for_prompt(prompt)
        if task.name in ("detect", "segment"):
            classes.extend(task.classes)
    return list(dict.fromkeys(classes))


def write_previews(folder: Path, rows: list[dict], limit: int, classes: list[str]) -> Path:
    """The first `limit` rows that decoded (in image id order), with their objects or answer drawn on."""
    from pipelines.previews import draw_row

    folder.mkdir(parents=True, exist_ok=True)
    ok = sorted((r for r in rows if not r["error"]), key=lambda r: (r["image_id"], r["prompt"]))
    # The rows of one image asked one class each (--per-class, or a manifest): draw their objects together.
    merged: dict[int, dict] = {}
    for row in ok:
        first = merged.get(row["image_id"])
        if first is None:
            merged[row["image_id"]] = dict(row)
        elif first["task"] == row["task"] and row["task"] in ("detect", "segment"):
            first["objects"] = [*(first["objects"] or ()), *(row["objects"] or ())]
            first["prompt"] = f"{first['prompt']} | {row['prompt']}"
    chosen = list(merged.values())[:limit]
    for i, row in enumerate(chosen):
        image = draw_row(row, classes)
        image.save(folder / f"{i:04d}-{Path(row['path']).stem}.png")
    return folder


__all__ = ["ConfigError", "LabelConfig", "ROW_SCHEMA", "Summary", "run_label"]
