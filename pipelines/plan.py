"""Before any work: the source, the job's tasks and the table of inputs still to label.

An input is one (image, prompt) pair. The job's tasks come from the command line once (`--task detect --classes
"cat ; dog"`, one task per class with `--per-class`); a manifest row's own prompt is read by `tasks.from_prompt`.
Inputs already in the output (`--resume`) are left out by their key hashes (pipelines.keys).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import ConfigError, LabelConfig
from pipelines.keys import table_key_hashes
from pipelines.sources import Source, SourceError, coco_source, folder_source, manifest_source, parquet_source
from tasks import Task, from_prompt, task_from_cli

SOURCES = "--images DIR, --coco ANN.json --images DIR, --manifest FILE or --parquet DATASET"


def load_source(cfg: LabelConfig) -> Source:
    given = [flag for flag, value in (("--coco", cfg.coco), ("--manifest", cfg.manifest), ("--parquet", cfg.parquet))
             if value]  # fmt: skip
    if len(given) > 1 or ((cfg.manifest or cfg.parquet) and cfg.images):
        raise ConfigError(f"give one source: {SOURCES}")
    try:
        if cfg.coco:
            if not cfg.images:
                raise ConfigError("--coco needs --images DIR, the folder its file_names are relative to")
            return coco_source(cfg.coco, cfg.images)
        if cfg.manifest:
            return manifest_source(cfg.manifest)
        if cfg.parquet:
            return parquet_source(cfg.parquet, cfg.image_column)
        if cfg.images:
            return folder_source(cfg.images)
    except SourceError as e:
        raise ConfigError(str(e)) from e
    raise ConfigError(f"give a source: {SOURCES}")


def job_tasks(cfg: LabelConfig, source: Source) -> list[Task]:
    """The tasks asked on the command line (several with --per-class); [] when every input brings its prompt.

    A COCO source without --classes asks for its category names.
    """
    if cfg.task is None:
        if _every_input_has_a_prompt(source):
            return []
        raise ConfigError("--task is required (a manifest or dataset without a prompt on every row needs it too)")
    classes = cfg.classes
    if cfg.task in ("detect", "segment") and not classes and source.categories:
        classes = " ; ".join(c["name"] for c in source.categories)
    if cfg.task in ("detect", "segment") and not classes:
        raise ConfigError(f'--task {cfg.task} needs --classes, e.g. --classes "cat ; dog"')
    if cfg.per_class and cfg.task not in ("detect", "segment"):
        raise ConfigError(f"--per-class is for --task detect or segment, not {cfg.task}")
    try:
        task = task_from_cli(cfg.task, classes=classes, prompt=cfg.prompt, lang=cfg.lang)
        if cfg.per_class:
            return [task_from_cli(cfg.task, classes=[c], lang=cfg.lang) for c in task.classes]
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return [task]


def _every_input_has_a_prompt(source: Source) -> bool:
    if source.items is not None:
        return source.items["prompt"].null_count == 0
    if "prompt" not in source.columns:
        return False
    import pyarrow.dataset as pads

    from storage import locate

    loc = locate(source.parquet)
    dataset = pads.dataset(loc.path, filesystem=loc.fs, format="parquet")
    return dataset.count_rows(filter=pc.field("prompt").is_null()) == 0


def tasks_by_prompt(tasks: list[Task]) -> dict[str, Task]:
    return {t.prompt(): t for t in tasks}


@dataclass
class Plan:
    """inputs: the (image_id, path, prompt) rows to label now (None for a Parquet dataset, filtered in Ray);
    expected: sorted key hashes of every input of the source; done: of those already written."""

    inputs: pa.Table | None
    expected: np.ndarray
    done: np.ndarray
    total: int

    @property
    def skipped(self) -> int:
        return int(np.isin(self.expected, self.done).sum())


def plan_inputs(source: Source, tasks: list[Task], done: np.ndarray, limit: int | None) -> Plan:
    """Every (image, prompt) of the source, minus the keys in `done`. A row's own prompt wins over the job's."""
    if source.items is None:
        from pipelines.parquet_input import parquet_keys

        expected = np.unique(parquet_keys(source, [t.prompt() for t in tasks], limit))
        return Plan(None, expected, done, len(expected))
    items = source.items.slice(0, limit) if limit else source.items
    # Rows of one image stay together (image-major order): a batch then holds an image's prompts side by side,
    # and the replica runs the vision tower once for them.
    step = len(tasks) + 1
    order = pa.array(np.arange(items.num_rows, dtype=np.int64) * step)
    items = items.append_column("_order", order)
    own = items.filter(pc.is_valid(items["prompt"]))
    parts = [own.select(["image_id", "path", "prompt", "_order"])]
    without = items.filter(pc.is_null(items["prompt"])).select(["image_id", "path", "_order"])
    for n, task in enumerate(tasks, start=1):
        if without.num_rows:
            shifted = pc.add(without["_order"], n)
            parts.append(
                pa.table(
                    {
                        "image_id": without["image_id"],
                        "path": without["path"],
                        "prompt": pa.array([task.prompt()] * without.num_rows, pa.string()),
                        "_order": shifted,
                    }
                )
            )
    inputs = pa.concat_tables(parts).sort_by("_order").drop_columns(["_order"])
    hashes = table_key_hashes(inputs)
    keep = ~np.isin(hashes, done)
    expected = np.unique(hashes)
    return Plan(inputs.filter(pa.array(keep)), expected, done, len(expected))


def task_of(prompt: str, known: dict[str, Task]) -> Task:
    return known.get(prompt) or from_prompt(prompt)
