"""Each spec checks its own values when it is made: one bad value each, a one-line message naming the option as
the user types it. A table of cases, each with the reason it is here."""

from __future__ import annotations

import argparse

import pytest

from jobs.cli import add_spec_arguments, spec_from_args
from labeling.filters import ObjectFilter
from specs.fields import SpecError
from specs.label import LabelJob, OutputSpec, PlacementSpec, ReplicaSpec, SourceSpec, TaskSpec

REPLICA = {"checkpoint": "ckpt"}
CASES = [
    # (spec, its values, what the message must say)
    (SourceSpec, {}, "give a source"),  # no source at all
    (SourceSpec, {"images": "a", "manifest": "m.csv"}, "give one source"),  # two sources
    (SourceSpec, {"coco": "ann.json"}, "--coco needs --images"),  # COCO file names need their folder
    (SourceSpec, {"images": "a", "limit": 0}, "--limit must be at least 1"),  # nothing to label
    (SourceSpec, {"images": "a", "max_pixels": 0}, "--max-pixels must be at least 1"),  # every image refused
    (SourceSpec, {"images": "a", "image_column": "img"}, "--image-column is for --parquet"),  # a column of nothing
    (TaskSpec, {"task": "paint"}, "--task must be one of"),  # a task that does not exist
    (TaskSpec, {"task": "caption", "per_class": True}, "--per-class is for tasks that take classes"),
    (TaskSpec, {"classes": "cat"}, "--classes needs --task"),  # classes for no task
    (ReplicaSpec, REPLICA | {"batch_size": 0}, "--batch-size must be at least 1"),
    (ReplicaSpec, REPLICA | {"max_new_tokens": 0}, "--max-new-tokens must be at least 1"),
    (ReplicaSpec, REPLICA | {"in_flight": 0}, "--in-flight must be at least 1"),
    (ReplicaSpec, REPLICA | {"threads": 0}, "--threads-per-replica must be at least 1"),
    (ReplicaSpec, REPLICA | {"backend": "onnx"}, "--backend must be one of"),
    (ReplicaSpec, REPLICA | {"device": "tpu"}, "--device must be cpu or cuda"),
    (ReplicaSpec, REPLICA | {"dtype": "int3"}, "--dtype"),
    (ReplicaSpec, REPLICA | {"vae": "/nowhere/vae.npz"}, "--vae /nowhere/vae.npz: file is missing"),
    (PlacementSpec, {"replicas": 0}, "--replicas must be at least 1"),
    (PlacementSpec, {"retries": -1}, "--retries must be at least 0"),
    (PlacementSpec, {"cpus_per_replica": 0.0}, "--cpus-per-replica must be above 0"),
    (PlacementSpec, {"gpus_per_replica": 0.0}, "--gpus-per-replica must be above 0"),
    (OutputSpec, {"output": "o", "retry_errors": ("read",)}, "--retry-errors labels the failed rows"),
    (OutputSpec, {"output": "o", "resume": True, "retry_errors": ("nap",)}, "--retry-errors kinds are"),
    (OutputSpec, {"output": "o", "exports": ("tiff",)}, "--export unknown format tiff"),
    (OutputSpec, {"output": "o", "rows_per_part": 0}, "--rows-per-part must be at least 1"),
    (OutputSpec, {"output": "o", "previews": -1}, "--previews must be at least 0"),
    (ObjectFilter, {"min_score": 1.5}, "--min-score must be a number in [0, 1]"),
    (ObjectFilter, {"class_thresholds": {"cat": 2.0}}, "--class-thresholds: scores lie in [0, 1]"),
    (ObjectFilter, {"nms_iou": 0.0}, "--nms takes an IoU in (0, 1]"),
]


@pytest.mark.parametrize(
    ("spec", "values", "says"), CASES, ids=[f"{c[0].__name__}-{i:02d}" for i, c in enumerate(CASES)]
)
def test_a_bad_value_gets_one_line_naming_the_option(spec, values, says):
    with pytest.raises(SpecError) as caught:
        spec(**values)
    message = str(caught.value)
    assert says in message and "\n" not in message, message


def test_specs_are_frozen_and_good_values_pass():
    spec = ReplicaSpec(checkpoint="ckpt", batch_size=4)
    with pytest.raises(AttributeError):
        spec.batch_size = 8  # type: ignore[misc]
    assert OutputSpec(output="o", resume=True, retry_errors="all").retry_errors[-1] == "other"


def test_the_job_checks_options_that_belong_to_different_specs():
    parts = {"source": SourceSpec(images="a"), "tasks": TaskSpec(task="ocr"), "output": OutputSpec(output="o")}
    with pytest.raises(SpecError, match="--gpus-per-replica needs --device cuda"):
        LabelJob(**parts, replica=ReplicaSpec(checkpoint="c"), placement=PlacementSpec(gpus_per_replica=0.5))
    on_gpu = LabelJob(**parts, replica=ReplicaSpec(checkpoint="c", device="cuda"))
    assert on_gpu.gpus_per_replica == 1.0  # the default on cuda, without changing the placement spec
    assert on_gpu.placement.gpus_per_replica is None


def test_the_command_line_is_built_from_the_fields_once():
    p = argparse.ArgumentParser()
    add_spec_arguments(p, ReplicaSpec)
    add_spec_arguments(p, PlacementSpec)
    help_text = p.format_help()
    assert "rows handed to a replica at once (default 8)" in help_text  # the field's help and default, once
    args = p.parse_args(["--checkpoint", "c", "--replica-resource", "a=2", "--replica-resource", "b"])
    assert spec_from_args(PlacementSpec, args).replica_resources == {"a": 2.0, "b": 1.0}
    assert spec_from_args(ReplicaSpec, args) == ReplicaSpec(checkpoint="c")


def test_task_spec_resolves_classes_from_a_coco_source_and_one_task_per_class():
    tasks = TaskSpec(task="detect", per_class=True).resolve(({"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}))
    assert [t.prompt() for t in tasks] == ["detect cat", "detect dog"]
    with pytest.raises(SpecError, match="--classes is required by --task segment"):
        TaskSpec(task="segment").resolve()
