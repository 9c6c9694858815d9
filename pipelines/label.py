"""Label a folder, COCO set, manifest or Parquet dataset with PaliGemma on Ray Data; `python -m jobs.label` is its
command line.

    plan (driver) ─► from_arrow / read_parquet ─► map(prepare): read, decode, upright RGB, resize  [CPU tasks]
                  ─► map_batches(Replica): batched generate + task parsing + masks              [actor pool]
                  ─► driver: drop keys already written, Parquet parts + commit records
                  ─► isolation of inputs that kill their replica ─► COCO files, exports, previews, summary

The driver is the only writer. That keeps exactly-once simple: Ray Data redoes the batch of a replica that died
(actors restart, tasks are retried a bounded number of times), and whatever reaches the driver is written unless
its (image_id, prompt) key is already there, so neither a retried batch nor a resumed run can duplicate a row.
Inputs that never came back (their batch killed the replica every time) are then split and retried alone until
the input that kills is found and written as an error row. Rows are small (text and objects); images and model
work stay on the workers, and the exports at the end stream over the parts.
"""

from __future__ import annotations

import math
import signal
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from labeling.errors import KINDS
from labeling.filters import ObjectFilter
from labeling.images import prepare
from pipelines.config import ConfigError, LabelConfig, Summary
from pipelines.keys import table_key_hashes
from pipelines.output import OutputError, OutputFolder
from pipelines.plan import Plan, job_tasks, load_source, plan_inputs, tasks_by_prompt
from pipelines.replica import Replica
from pipelines.sources import Source
from pipelines.writer import PartWriter
from tasks import Task


class Interrupted(Exception):
    """The job was stopped by SIGINT or SIGTERM; buffered rows were written first."""

    def __init__(self, signum: int, rows: int, output: str):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum, self.rows, self.output = signum, rows, output

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as shells report them


class _Stop(BaseException):
    """Raised by the signal handlers inside the driver's loop (a BaseException, so no `except Exception` eats it)."""

    def __init__(self, signum: int):
        self.signum = signum


# ---- checking the request before any work starts ---------------------------------------------------------------


def check_checkpoint(cfg: LabelConfig) -> int:
    """The checkpoint as far as can be known without loading it: config.json, tokenizer.json and the header of
    every weights file, checked against the config (a truncated or mismatched file fails here, in one line, not
    in every replica); returns the image size."""
    from model import CheckpointError, PaliGemma
    from model.image_processing import ImageProcessor
    from model.loading import resolve_dtype

    folder = Path(cfg.checkpoint)
    try:
        config = PaliGemma.check_pretrained(folder)
        resolve_dtype(cfg.dtype)
        return ImageProcessor.from_pretrained(folder, config.vision.image_size).size
    except (CheckpointError, ValueError) as e:
        raise ConfigError(f"--checkpoint: {e}") from e


def check_resources(cfg: LabelConfig) -> None:
    if cfg.backend not in ("native", "transformers"):
        raise ConfigError(f"--backend must be native or transformers, got {cfg.backend!r}")
    for flag, value in (("--replicas", cfg.replicas), ("--batch-size", cfg.batch_size),
                        ("--max-new-tokens", cfg.max_new_tokens), ("--max-pixels", cfg.max_pixels),
                        ("--rows-per-part", cfg.rows_per_part), ("--in-flight", cfg.in_flight or 1)):  # fmt: skip
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    if cfg.retries < 0:
        raise ConfigError(f"--retries must be 0 or more, got {cfg.retries}")
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
    if cfg.previews < 0:
        raise ConfigError(f"--previews must be 0 or more, got {cfg.previews}")
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {cfg.limit}")
    if cfg.retry_errors and not cfg.resume:
        raise ConfigError("--retry-errors labels the failed rows of an earlier run again: it needs --resume")
    if any(k not in (*KINDS, "other") for k in cfg.retry_errors):
        raise ConfigError(f"--retry-errors: kinds are {', '.join(KINDS)}")
    from exports import FORMATS

    unknown = [f for f in cfg.exports if f not in FORMATS]
    if unknown:
        raise ConfigError(f"--export: unknown format {', '.join(unknown)}; formats are {', '.join(FORMATS)}")
    object_filter(cfg)


def object_filter(cfg: LabelConfig) -> ObjectFilter:
    try:
        return ObjectFilter(cfg.min_score, dict(cfg.class_thresholds), cfg.nms_iou, cfg.class_agnostic_nms)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def settings_for_resume(cfg: LabelConfig, tasks: list[Task]) -> dict:
    """What decides a row's content; --resume refuses to mix rows made with other values of these."""
    return {
        "checkpoint": str(Path(cfg.checkpoint).absolute()),
        "backend": cfg.backend,
        "prompts": [t.prompt() for t in tasks],
        "max_new_tokens": cfg.max_new_tokens,
        "dtype": cfg.dtype,
        "vae": None if cfg.vae is None else str(Path(cfg.vae).absolute()),
        "objects": object_filter(cfg).settings(),
    }


# ---- the Ray dataset --------------------------------------------------------------------------------------------


def cpus_per_replica(cfg: LabelConfig, cluster_cpus: float) -> float:
    """CPU reservation of a replica. A GPU replica needs little CPU. A CPU replica takes at most one CPU and
    always leaves one free for the decode tasks: on a 2-CPU machine, 2 replicas at 1 CPU each plus the read task
    deadlock (Ray Data waits for a CPU for the read for ever), so they get 0.5 each."""
    if cfg.cpus_per_replica is not None:
        return cfg.cpus_per_replica
    if cfg.gpus_per_replica:
        return 1.0
    return max(0.1, min(1.0, (cluster_cpus - 1) / cfg.replicas))


# Memory a decode task reserves: its worker process (the interpreter and its imports, about 250 MiB measured), a
# 24-megapixel photo decoded to RGB and the copy EXIF rotation makes. (Ray Data warns when a worker's measured
# memory passes the reservation; at 256 MiB the worker's own baseline did.) It also keeps Ray Data from fusing the
# decode stage into the replicas' actor pool (it fuses maps whose remote args match, e.g. 0.5 CPU each on a 2-CPU
# machine), which would decode inside the model actor and leave a GPU idle meanwhile.
DECODE_MEMORY = 512 * 2**20


def input_blocks(inputs: pa.Table, batch_size: int, replicas: int) -> list[pa.Table]:
    """The inputs as Arrow tables of a whole number of batches each, one Ray block per table.

    A block that is not a multiple of the batch size makes a short batch (blocks of 12 at batch size 8 run as
    8 + 4, wasting a third of the work), and a replica's rows reach the driver a block at a time. So blocks hold
    1 to 16 batches: enough blocks to keep every replica busy (8 per replica), few enough for small overheads.
    """
    per_replica = math.ceil(inputs.num_rows / (batch_size * 8 * replicas))
    size = batch_size * max(1, min(16, per_replica))
    return [inputs.slice(i, size) for i in range(0, inputs.num_rows, size)]


def replica_args(cfg: LabelConfig, tasks: list[Task]) -> dict:
    return {
        "checkpoint": str(Path(cfg.checkpoint).absolute()),
        "tasks": tasks_by_prompt(tasks),
        "backend": cfg.backend,
        "device": cfg.device,
        "dtype": cfg.dtype,
        "vae": None if cfg.vae is None else str(Path(cfg.vae).absolute()),
        "max_new_tokens": cfg.max_new_tokens,
        "object_filter": object_filter(cfg),
        "in_flight": cfg.in_flight,
        "compile": cfg.compile,
        "batch_size": cfg.batch_size,
        # torch in an actor gets OMP_NUM_THREADS = its CPU reservation (at least 1); CPU replicas instead share
        # their machine's cores (the replica divides os.cpu_count() there by the replica count).
        "threads": cfg.threads_per_replica or (None if cfg.gpus_per_replica else -cfg.replicas),
    }


def build_dataset(cfg: LabelConfig, source: Source, plan: Plan, tasks: list[Task], image_size: int,
                  replica_class: type):  # fmt: skip
    import ray

    cluster_cpus = float(ray.cluster_resources().get("CPU", 1))
    if plan.inputs is not None:
        ds = ray.data.from_arrow(input_blocks(plan.inputs, cfg.batch_size, cfg.replicas))
    else:
        from pipelines.parquet_input import parquet_inputs

        ds = parquet_inputs(source, [t.prompt() for t in tasks], plan.done, cfg.limit)
    ds = ds.map(
        prepare,
        fn_kwargs={"size": image_size, "max_pixels": cfg.max_pixels},
        num_cpus=0.5,
        memory=DECODE_MEMORY,
    )
    with warnings.catch_warnings():
        # Ray 2.60 takes actor restarts and task retries only through its deprecated ray_remote_args: there is no
        # named parameter for them yet, and the retries are what bounds a poison input.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
        return _map_batches(ds, cfg, tasks, replica_class, cluster_cpus)


def _map_batches(ds, cfg: LabelConfig, tasks: list[Task], replica_class: type, cluster_cpus: float):
    import ray

    return ds.map_batches(
        replica_class,
        fn_constructor_kwargs=replica_args(cfg, tasks),
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.replicas),
        num_cpus=cpus_per_replica(cfg, cluster_cpus),
        num_gpus=cfg.gpus_per_replica or None,
        resources=cfg.replica_resources or None,
        # A replica that dies is restarted and its batch redone, at most `retries` times; a batch that still
        # fails is left out here (max_errored_blocks below) and its inputs go to isolate_poison.
        max_restarts=-1,
        max_task_retries=cfg.retries,
    )


def run_pipeline(cfg: LabelConfig, ds, writer: PartWriter) -> None:
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.progress
    ctx.enable_operator_progress_bars = cfg.progress
    ctx.max_errored_blocks = -1  # a batch that killed its replica every time must not end the job
    writer.started = time.perf_counter()
    for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        writer.add(table)
    writer.flush()


# ---- inputs that kill their replica ------------------------------------------------------------------------------


def missing_inputs(cfg: LabelConfig, source: Source, plan: Plan, tasks: list[Task], missing: np.ndarray) -> list[dict]:
    """The planned inputs with these key hashes (image_id, path, prompt[, bytes])."""
    if plan.inputs is None:
        from pipelines.parquet_input import parquet_rows

        return parquet_rows(source, [t.prompt() for t in tasks], missing, cfg.limit)
    hashes = table_key_hashes(plan.inputs)
    return plan.inputs.filter(pa.array(np.isin(hashes, missing))).to_pylist()


def isolate_poison(cfg: LabelConfig, rows: list[dict], tasks: list[Task], image_size: int, writer: PartWriter,
                   replica_class: type, log) -> int:  # fmt: skip
    """Label inputs whose batches never came back, halving a batch each time its replica dies, so that the input
    that kills it ends up alone and is written as an error row; returns how many inputs were set aside.

    Runs in one plain Ray actor (restarted after each death) rather than Ray Data, to see which call died and why.
    """
    import ray

    from pipelines.isolation import IsolationWorker, death_cause

    log(f"{len(rows)} input(s) did not come back from the replicas; retrying them in smaller batches")
    args = replica_args(cfg, tasks) | {"threads": cfg.threads_per_replica or None}
    options = {"num_cpus": cpus_per_replica(cfg, float(ray.cluster_resources().get("CPU", 1))),
               "num_gpus": cfg.gpus_per_replica or 0, "resources": cfg.replica_resources or None}  # fmt: skip
    worker_class = ray.remote(IsolationWorker).options(max_restarts=0, **options)
    worker = None
    queue: list[tuple[list[dict], int]] = [
        (rows[i : i + cfg.batch_size], 0) for i in range(0, len(rows), cfg.batch_size)
    ]
    isolated = 0
    while queue:
        batch, deaths = queue.pop(0)
        if worker is None:
            worker = worker_class.remote(replica_class, args, image_size, cfg.max_pixels)
        try:
            writer.add(ray.get(worker.label.remote(batch)))
            continue
        except ray.exceptions.RayActorError as e:
            cause = death_cause(e)
            worker = None
        if len(batch) > 1:
            half = len(batch) // 2
            queue[:0] = [(batch[:half], 0), (batch[half:], 0)]
        elif deaths < cfg.retries:
            queue.insert(0, (batch, deaths + 1))
        else:
            from pipelines.isolation import died_row

            row = batch[0]
            log(f"set aside: image {row['image_id']} ({row['path']}), prompt {row['prompt']!r}: the replica died "
                f"on it {deaths + 1} time(s)")  # fmt: skip
            writer.add(died_row(row, tasks, cause, Path(cfg.checkpoint).name))
            isolated += 1
    writer.flush()
    return isolated


def source_record(source: Source) -> dict:
    """What exports need to know of the source later: its kind, categories, and where a Parquet dataset lies."""
    record = {"kind": source.kind, "categories": list(source.categories)}
    if source.kind == "parquet":
        record |= {"location": source.parquet, "image_column": source.image_column, "columns": list(source.columns)}
    return record


# ---- the job ----------------------------------------------------------------------------------------------------


def run_label(cfg: LabelConfig, log=None, replica_class: type = Replica) -> Summary:
    """Check everything, label what is not done yet, then write the exports, previews and the summary.

    replica_class: the model stage; tests hand in a subclass that fails on purpose.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    check_resources(cfg)
    source = load_source(cfg)
    tasks = job_tasks(cfg, source)
    image_size = check_checkpoint(cfg)
    if any(t.name == "segment" for t in tasks) and not cfg.vae:
        log("note: --task segment without --vae gives boxes only (masks need big_vision's vae-oid.npz)")
    try:
        out = OutputFolder(cfg.output)
        out.prepare(settings_for_resume(cfg, tasks), cfg.resume)
    except OutputError as e:
        raise ConfigError(str(e)) from e

    out.write_json("source.json", source_record(source))
    retried = out.drop_rows_with_errors(cfg.retry_errors) if cfg.retry_errors else 0
    if retried:
        log(f"--retry-errors: {retried} row(s) that failed before ({', '.join(cfg.retry_errors)}) are labeled again")
    done = out.done_keys() if cfg.resume else np.empty(0, np.int64)
    plan = plan_inputs(source, tasks, done, cfg.limit)
    todo = plan.total - plan.skipped
    if plan.skipped:
        log(f"--resume: {plan.skipped} of {plan.total} inputs are already in {out.root.uri}, {todo} to do")

    writer = PartWriter(out.parts, plan.expected, plan.done, cfg.rows_per_part, cfg.seconds_per_part)
    start = time.perf_counter()
    isolated = 0
    if todo:
        isolated = _label(cfg, source, plan, tasks, image_size, writer, replica_class, out, log)
    end = time.perf_counter()
    pipeline_seconds = end - (writer.started or start)  # images/s over the pipeline, not Ray's start-up

    summary = Summary(
        inputs=writer.rows,
        errors=writer.errors,
        skipped=plan.skipped,
        seconds=round(end - start, 3),
        images_per_s=round(writer.rows / pipeline_seconds, 3) if pipeline_seconds > 0 and writer.rows else 0.0,
        total_rows=0,
        duplicates_dropped=writer.duplicates,
        isolated=isolated,
        retried_errors=retried,
    )
    from pipelines.finish import finish

    finish(cfg, out, source, tasks, summary, log)
    return summary


def _label(cfg, source, plan, tasks, image_size, writer, replica_class, out, log) -> int:
    from pipelines.cluster import ClusterError, connect

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def stop(signum, frame):
        raise _Stop(signum)

    for s in previous:
        signal.signal(s, stop)
    started_ray = False
    try:
        try:
            started_ray = connect(cfg.address, verbose=cfg.verbose)
        except ClusterError as e:
            raise ConfigError(str(e)) from None
        ds = build_dataset(cfg, source, plan, tasks, image_size, replica_class)
        run_pipeline(cfg, ds, writer)
        missing = writer.missing()
        isolated = 0
        if len(missing):
            rows = missing_inputs(cfg, source, plan, tasks, missing)
            isolated = isolate_poison(cfg, rows, tasks, image_size, writer, replica_class, log)
        return isolated
    except (_Stop, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, _Stop) else signal.SIGINT
        for s in previous:  # a second Ctrl-C while saving falls back to the default behaviour
            signal.signal(s, signal.SIG_DFL if s == signal.SIGTERM else signal.default_int_handler)
        writer.flush()
        raise Interrupted(signum, writer.written_rows, out.root.uri) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if started_ray:
            import ray

            ray.shutdown()


__all__ = ["ConfigError", "Interrupted", "LabelConfig", "Summary", "asdict", "run_label"]
