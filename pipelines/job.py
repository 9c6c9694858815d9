"""Label a folder, COCO set, manifest or Parquet dataset with PaliGemma on Ray Data; `python -m jobs.label` is its
command line, `run_label(LabelJob(...))` the whole job.

    source.plan (driver) ─► Ray dataset of inputs ─► map(prepare): read, decode, upright RGB, resize  [CPU tasks]
                         ─► map_batches(Replica): batched generate + task parsing + masks            [actor pool]
                         ─► driver: drop keys already written, Parquet parts + commit records
                         ─► isolation of inputs that kill their replica ─► COCO files, exports, previews, summary

The driver is the only writer. That keeps exactly-once simple: Ray Data redoes the batch of a replica that died
(actors restart, tasks are retried a bounded number of times), and whatever reaches the driver is written unless
its (image_id, prompt) key is already there, so neither a retried batch nor a resumed run can duplicate a row.
Inputs that never came back (their batch killed the replica every time) are then split and retried alone until
the input that kills is found and written as an error row (pipelines/isolation.py). Rows are small (text and
objects); images and model work stay on the workers, and the exports at the end stream over the parts.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labeling.images import prepare
from pipelines.cluster import RaySession
from pipelines.console import Progress
from pipelines.lock import LockHeld, OutputLock
from pipelines.output import OutputError, OutputFolder
from pipelines.replica import Replica
from pipelines.summary import Summary, Timeline
from pipelines.writer import PartWriter
from sources import Plan, Source
from specs.fields import SpecError
from specs.label import LabelJob
from tasks import Task, TaskLookup


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


def check_checkpoint(folder: str, adapter: str | None = None) -> int:
    """The checkpoint as far as can be known without loading it: config.json, tokenizer.json and the header of
    every weights file, checked against the config (a truncated or mismatched file fails here, in one line, not
    in every replica), and the adapter against it; returns the image size."""
    from model import CheckpointError, PaliGemma
    from model.adapters import AdapterError, check_adapter
    from model.image_processing import ImageProcessor

    try:
        config = PaliGemma.check_pretrained(Path(folder))
        size = ImageProcessor.from_pretrained(Path(folder), config.vision.image_size).size
    except (CheckpointError, ValueError) as e:
        raise SpecError(f"--checkpoint: {e}") from e
    if adapter is not None:
        try:
            check_adapter(adapter, folder)
        except AdapterError as e:
            raise SpecError(f"--adapter: {e}") from e
    return size


def settings_for_resume(job: LabelJob, tasks: list[Task]) -> dict:
    """What decides a row's content; --resume refuses to mix rows made with other values of these."""
    replica = job.replica.absolute()
    return {
        "checkpoint": replica.checkpoint,
        "backend": replica.backend,
        "prompts": [t.prompt() for t in tasks],
        "max_new_tokens": replica.max_new_tokens,
        "dtype": replica.dtype,
        "vae": replica.vae,
        "adapter": replica.adapter,
        "objects": job.objects.settings(),
        "tiles": job.tiles.settings(),
    }


# ---- the Ray dataset --------------------------------------------------------------------------------------------


def cpus_per_replica(job: LabelJob, cluster_cpus: float) -> float:
    """CPU reservation of a replica. A GPU replica needs little CPU. A CPU replica takes at most one CPU and
    always leaves one free for the decode tasks: on a 2-CPU machine, 2 replicas at 1 CPU each plus the read task
    deadlock (Ray Data waits for a CPU for the read for ever), so they get 0.5 each."""
    if job.placement.cpus_per_replica is not None:
        return job.placement.cpus_per_replica
    if job.gpus_per_replica:
        return 1.0
    return max(0.1, min(1.0, (cluster_cpus - 1) / job.placement.replicas))


# Memory a decode task reserves: its worker process (the interpreter and its imports, about 250 MiB measured), a
# 24-megapixel photo decoded to RGB and the copy EXIF rotation makes. (Ray Data warns when a worker's measured
# memory passes the reservation; at 256 MiB the worker's own baseline did.) It also keeps Ray Data from fusing the
# decode stage into the replicas' actor pool (it fuses maps whose remote args match, e.g. 0.5 CPU each on a 2-CPU
# machine), which would decode inside the model actor and leave a GPU idle meanwhile.
DECODE_MEMORY = 512 * 2**20


@dataclass(frozen=True)
class Replicas:
    """How the job's replicas are made, once for the pipeline's actor pool and the isolation worker alike."""

    job: LabelJob
    tasks: tuple[Task, ...]
    cpus: float  # each replica's CPU reservation (cpus_per_replica)
    image_size: int  # the model's resolution (tiles default to it)

    @property
    def decode_size(self) -> int:
        """The side the decode stage resizes to: the model's, or 0 (the whole image) when tiles are cut from it."""
        return 0 if self.job.tiles.on else self.image_size

    def args(self, shared: bool = True) -> dict:
        """Replica(**args). shared: CPU replicas share the machine's cores (each takes its CPUs / replicas
        threads; torch in an actor would otherwise get OMP_NUM_THREADS = its reservation, at least 1)."""
        spec = self.job.replica
        threads = spec.threads or (-self.job.placement.replicas if shared and not self.job.gpus_per_replica else None)
        return {"spec": spec.absolute(), "tasks": self.tasks, "object_filter": self.job.objects, "threads": threads,
                "tiles": self.job.tiles.config(self.image_size)}  # fmt: skip

    def options(self) -> dict:
        """Ray's placement of one replica."""
        return {"num_cpus": self.cpus, "num_gpus": self.job.gpus_per_replica or 0,
                "resources": self.job.placement.replica_resources or None}  # fmt: skip


def build_dataset(job: LabelJob, plan: Plan, replicas: Replicas, replica_class: type):
    import ray

    ds = plan.dataset(job.replica.batch_size, job.placement.replicas)
    ds = ds.map(
        prepare,
        fn_kwargs={"size": replicas.decode_size, "max_pixels": job.source.max_pixels},
        num_cpus=0.5,
        memory=DECODE_MEMORY,
    )
    options = replicas.options()
    with warnings.catch_warnings():
        # Ray 2.60 takes actor restarts and task retries only through its deprecated ray_remote_args: there is no
        # named parameter for them yet, and the retries are what bounds a poison input.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
        return ds.map_batches(
            replica_class,
            fn_constructor_kwargs=replicas.args(),
            batch_size=job.replica.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=job.placement.replicas),
            num_cpus=options["num_cpus"],
            num_gpus=options["num_gpus"] or None,
            resources=options["resources"],
            # A replica that dies is restarted and its batch redone, at most `retries` times; a batch that still
            # fails is left out here (max_errored_blocks below) and its inputs go to the isolation worker.
            max_restarts=-1,
            max_task_retries=job.placement.retries,
        )


def run_pipeline(job: LabelJob, ds, writer: PartWriter) -> None:
    import ray

    ctx = ray.data.DataContext.get_current()
    # The job prints its own progress (pipelines/console.py); Ray Data's bars only with --verbose.
    ctx.enable_progress_bars = ctx.enable_operator_progress_bars = job.output.verbose and job.output.progress
    ctx.max_errored_blocks = -1  # a batch that killed its replica every time must not end the job
    writer.started = time.perf_counter()
    for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        writer.add(table)
    writer.flush()


def isolate_missing(job: LabelJob, plan: Plan, replicas: Replicas, writer: PartWriter, replica_class: type,
                    log) -> int:  # fmt: skip
    """Label the planned inputs that never came back, finding any that kill their replica; returns how many
    were set aside as error rows."""
    missing = writer.missing()
    if not len(missing):
        return 0
    import ray

    from pipelines.isolation import IsolationWorker, died_row, isolate_poison

    worker_class = ray.remote(IsolationWorker).options(max_restarts=0, **replicas.options())
    args = replicas.args(shared=False)
    task_for, model = TaskLookup(replicas.tasks), Path(job.replica.checkpoint).name
    return isolate_poison(
        plan.inputs(missing),
        lambda: worker_class.remote(replica_class, args, replicas.decode_size, job.source.max_pixels),
        writer,
        job.replica.batch_size,
        job.placement.retries,
        lambda row, cause: died_row(row, task_for, cause, model),
        log,
    )


# ---- the job ----------------------------------------------------------------------------------------------------


def run_label(job: LabelJob, log=None, replica_class: type = Replica) -> Summary:
    """Check everything, take the output, label what is not done yet, then write the exports, previews and the
    summary.

    replica_class: the model stage; tests hand in a subclass that fails on purpose.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    timeline = Timeline()
    # The checkpoint's check imports torch (a second or two) while the source is listed (I/O and Arrow).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-check") as pool:
        checked = pool.submit(check_checkpoint, job.replica.checkpoint, job.replica.adapter)
        source = job.source.open()
        timeline.mark("source listed")
        image_size = checked.result()
    for note in source.notes:
        log(f"note: {note}")
    if job.tasks.task is None and not source.every_input_has_a_prompt():
        raise SpecError("--task is required (a manifest or dataset without a prompt on every row needs it too)")
    tasks = job.tasks.resolve(source.categories)
    timeline.mark("checkpoint checked")
    if any(t.kind == "objects" and t.decodes_masks for t in tasks) and not job.replica.vae:
        log("note: a segment task without --vae gives boxes only (masks need big_vision's vae-oid.npz)")
    try:
        out = OutputFolder(job.output.output)
        out.check_writable()
        lock = OutputLock(out.root, log)
        lock.acquire()
    except (OutputError, LockHeld) as e:
        raise SpecError(f"--output {job.output.output}: {e}" if isinstance(e, LockHeld) else str(e)) from e
    ray_session = RaySession(job.placement.address, job.output.verbose)
    try:
        return _label_output(job, source, tasks, image_size, out, lock, replica_class, ray_session, timeline, log)
    finally:
        ray_session.close()
        lock.release()


def _label_output(job: LabelJob, source: Source, tasks: list[Task], image_size: int, out: OutputFolder,
                  lock: OutputLock, replica_class: type, ray_session: RaySession, timeline: Timeline,
                  log) -> Summary:  # fmt: skip
    """The run on an output this run holds: resume bookkeeping, the labeling, the summary and what follows."""
    try:
        out.prepare(settings_for_resume(job, tasks), job.output.resume)
    except OutputError as e:
        raise SpecError(str(e)) from e
    source.write_record(out.root)
    kinds = job.output.retry_errors
    retried = out.drop_rows_with_errors(kinds) if kinds else 0
    if retried:
        log(f"--retry-errors: {retried} row(s) that failed before ({', '.join(kinds)}) are labeled again")
    done = out.done_keys() if job.output.resume else np.empty(0, np.int64)
    plan = source.plan([t.prompt() for t in tasks], done, job.source.limit)
    todo = plan.total - plan.skipped
    timeline.mark("inputs planned")
    if plan.skipped:
        log(f"--resume: {plan.skipped} of {plan.total} inputs are already in {out.root.uri}, {todo} to do")
    progress = Progress(todo, job.output.progress_every) if job.output.progress and todo else None
    writer = PartWriter(out.parts, plan.expected, plan.done, job.output.rows_per_part, job.output.seconds_per_part,
                        before_write=lock.check, progress=progress, timeline=timeline)  # fmt: skip
    start = time.perf_counter()
    with progress or contextlib.nullcontext():
        isolated = (_label(job, plan, tasks, image_size, writer, replica_class, out, ray_session, timeline, log)
                    if todo else 0)  # fmt: skip
    end = time.perf_counter()
    pipeline_seconds = end - (writer.started or start)  # images/s over the pipeline, not Ray's start-up
    summary = Summary(
        rows=writer.rows,
        errors=writer.errors,
        skipped=plan.skipped,
        seconds=round(end - start, 3),
        images_per_s=round(writer.rows / pipeline_seconds, 3) if pipeline_seconds > 0 and writer.rows else 0.0,
        total_rows=0,
        duplicates_dropped=writer.duplicates,
        isolated=isolated,
        retried_errors=retried,
        not_inputs=dict(source.skipped),
        phases=timeline.marks,
    )
    from pipelines.finish import finish

    finish(job, out, source, tasks, summary, log, timeline)
    return summary


def _label(job: LabelJob, plan: Plan, tasks: list[Task], image_size: int, writer: PartWriter, replica_class: type,
           out: OutputFolder, ray_session: RaySession, timeline: Timeline, log) -> int:  # fmt: skip
    """Ray's part of the job: the pipeline, then the isolation of inputs that never came back; SIGINT and
    SIGTERM save the rows so far and raise Interrupted."""
    from pipelines.cluster import ClusterError

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def stop(signum, frame):
        raise _Stop(signum)

    for s in previous:
        signal.signal(s, stop)
    try:
        try:
            ray_session.start()
        except ClusterError as e:
            raise SpecError(str(e)) from None
        timeline.mark("ray started")
        import ray

        out.ray_logs = ray_session.logs()
        cpus = cpus_per_replica(job, float(ray.cluster_resources().get("CPU", 1)))
        replicas = Replicas(job, tuple(tasks), cpus, image_size)
        run_pipeline(job, build_dataset(job, plan, replicas, replica_class), writer)
        timeline.mark("last row")
        return isolate_missing(job, plan, replicas, writer, replica_class, log)
    except (_Stop, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, _Stop) else signal.SIGINT
        for s in previous:  # a second Ctrl-C while saving falls back to the default behaviour
            signal.signal(s, signal.SIG_DFL if s == signal.SIGTERM else signal.default_int_handler)
        writer.flush()
        raise Interrupted(signum, writer.written_rows, out.root.uri) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


__all__ = ["Interrupted", "LabelJob", "Summary", "run_label"]
