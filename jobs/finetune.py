"""Fine-tune PaliGemma (or train a small one from scratch) under Ray Train's TorchTrainer.

    python -m jobs.finetune --model /ckpt/paligemma-3b-pt-224 --train data/train.jsonl --val data/train.val.jsonl \
                            --mode lora --eval-every 200 --patience 5 --max-minutes 30 --output /abs/runs/lora
    python -m jobs.finetune --scratch shapes --train shapes --vae checkpoints/paligemma-shapes/vae.npz \
                            --curriculum shapes --steps 9000 --batch-size 32 --lr 1e-3 --eval-every 500 \
                            --output /abs/runs/shapes
    python -m jobs.finetune --resume /abs/runs/shapes [--max-minutes 60]       # go on where it stopped

--train is a .jsonl or .parquet file of (image, prefix, suffix) records (`python -m jobs.make_records` writes
them from COCO, YOLO, VOC, Label Studio exports, label runs and referring tables), or `shapes` for the built-in
synthetic generator (training/shapes.py; --data-seed picks the stream). The loss covers the answer only and the
prompt is the bidirectional prefix, as in PaliGemma's own training. --mode full trains every weight, attention
only the text decoder's attention, lora peft's LoRA adapters on the text decoder's projections, saved in peft's
format with Hugging Face names (`python -m jobs.merge_adapter` folds them into a plain checkpoint; jobs that
take `--adapter` load them as they are). --mode qlora needs a CUDA GPU and is refused on a CPU.

Validation: --val FILE (records, or a COCO file with --val-images) is labeled every --eval-every steps, at the end
and once before the first step, with the label job's code, and scored with evals (COCO AP/AP50 for detect and
segment, CIDEr for captions, exact match for OCR, ANLS for answers); the scores go to log.jsonl and curves.png,
RUN/best/ keeps the evaluation with the best --best-metric (default per task), and --patience N stops after N
evaluations without a better one. Without --val, --eval-every scores the held-out shapes set (--train shapes).
--max-minutes M without --steps picks the schedule that fits M minutes (the steps' and evaluations' times are
measured on the first steps: training/loop.py); with --steps it ends the sitting after M minutes (resumable).

Augmentation of object records (off by default; text records are never touched): --hflip P flips boxes and
masks with the image (never a record that says left or right), --scale-jitter J zooms by [1-J, 1+J] moving boxes
and masks exactly, --shuffle-objects reorders each answer's objects every epoch (training/augment.py).

--resume RUN continues a stopped run (killed, or ended by --max-minutes) from RUN/last with its optimizer state,
schedule, data position, RNG and best score: the weights come out as if it had never stopped. Its settings are
read from RUN/training_config.json; only --max-minutes (and where Ray runs) may change. last/ is saved every
--save-every steps and every --save-minutes.

Locally this runs one worker on this machine's CPUs (--cpus-per-worker sets the CPUs and so the threads); on a
cluster (`ray job submit --working-dir . -- python -m jobs.finetune ... --workers 4 --gpus`) one worker per GPU,
with gradients averaged by DDP. The output folder (give an absolute path under `ray job submit`) gets
training_config.json, log.jsonl, curves.png, `last/`, `best/` and `final/`.
Exit status: 0 on success, 1 when training failed, 2 for a configuration error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import replace
from pathlib import Path

from jobs.cli import add_spec_arguments, command_parser, spec_from_args
from specs.fields import SpecError
from specs.finetune import SITTING_FIELDS, FinetuneConfig

# Job options that are not the run's own (where and how it runs): any may change on --resume.
PLACEMENT = ("resume", "workers", "gpus", "cpus_per_worker", "address", "verbose")


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m jobs.finetune", __doc__)
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--model", help="checkpoint folder to fine-tune")
    start.add_argument("--scratch", help="train a named size from random initialization (e.g. shapes)")
    start.add_argument("--resume", metavar="RUN", help="continue the run in this folder from its last/ checkpoint")
    add_spec_arguments(p, FinetuneConfig, title="run (saved in RUN/training_config.json)")
    ray = p.add_argument_group("where it runs")
    ray.add_argument("--workers", type=int, default=1, help="Ray Train workers (default 1)")
    ray.add_argument("--gpus", action="store_true", help="one GPU per worker")
    ray.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (default: all of this machine's)")
    ray.add_argument("--address", help="Ray address to join (default: local, or the cluster under ray job submit)")
    ray.add_argument("--verbose", action="store_true", help="show everything Ray logs besides the run's own lines")
    return p


class LogFollower:
    """The run's console: a line per record the run appends to RUN/log.jsonl (training steps with loss,
    examples/s and the time left, evaluations, the vision tower's pretraining), printed by the driver, so that a
    normal run shows the run's own words and none of Ray's (its logs stay in Ray's log folder)."""

    def __init__(self, log: Path, steps: int, every: float = 2.0):
        import threading

        self.log, self.steps, self.every = log, steps, every
        self.offset = 0  # bytes of the log already read: whole lines only
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def line(self, record: dict) -> str | None:
        """The console line of one log record (None for records that say nothing new)."""
        if "eval" in record:
            scores = " ".join(f"{k} {v:.3f}" for k, v in record["eval"].items() if isinstance(v, float))
            return f"eval at step {record['step']}: {scores}"
        if "vision_step" in record:
            return f"vision pretraining: {record['vision_examples']} images, {record['vision_minutes']:.1f} min"
        if "loss" in record:
            rate = record.get("examples_per_s") or 0.0
            left = (self.steps - record["step"]) * record["examples"] / max(record["step"], 1) / rate if rate else None
            eta = f", {left / 60:.0f} min left" if left is not None else ""
            return (f"step {record['step']}/{self.steps}: loss {record['loss']:.4f}, {rate:.1f} examples/s, "
                    f"lr {record['lr']:.2e}{eta}")  # fmt: skip
        return None

    def _follow(self) -> None:
        while not self._stop.wait(self.every):
            self.flush()

    def flush(self) -> None:
        """Print the lines appended since the last call. A line still being written (no newline yet) waits for the
        next call, so it is never read half."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self.offset)
                new = f.read()
        except OSError:
            return
        whole = new[: new.rfind(b"\n") + 1]
        self.offset += len(whole)
        for text in whole.decode("utf-8", "replace").splitlines():
            try:
                said = self.line(json.loads(text))
            except (ValueError, KeyError, TypeError):
                said = None
            if said:
                print(said, file=sys.stderr, flush=True)

    def __enter__(self) -> LogFollower:
        self.offset = self.log.stat().st_size if self.log.is_file() else 0  # a resumed run's old lines
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()


def _absolute(path: str | None) -> str | None:
    return str(Path(path).absolute()) if path else None


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """The spec of a new run from the command line (paths made absolute: workers may run elsewhere), or the saved
    one of --resume RUN with this sitting's --max-minutes."""
    if args.resume:
        return resumed_config(args)
    return spec_from_args(
        FinetuneConfig,
        args,
        output=_absolute(args.output) or "",
        train=args.train if args.train == "shapes" else _absolute(args.train),
        model=_absolute(args.model),
        vae=_absolute(args.vae),
        val=_absolute(args.val),
        val_images=_absolute(args.val_images),
    )


def resumed_config(args: argparse.Namespace) -> FinetuneConfig:
    run = Path(args.resume)
    saved = run / "training_config.json"
    if not saved.is_file():
        raise SpecError(f"--resume {run}: not a run folder (training_config.json is missing)")
    if not any((run / name / "trainer_state.pt").is_file() for name in ("last", "last.old")):
        raise SpecError(f"--resume {run}: nothing to resume (no last/ checkpoint was saved yet)")
    cfg = FinetuneConfig.from_dict(json.loads(saved.read_text()))
    return replace(cfg, max_minutes=args.max_minutes) if args.max_minutes is not None else cfg


def check_inputs(cfg: FinetuneConfig, resume: bool) -> str | None:
    """A message for inputs that would only fail inside a worker, minutes later; None when they look right."""
    if resume:
        return None
    if cfg.model and not (Path(cfg.model) / "config.json").is_file():
        return f"--model {cfg.model}: not a checkpoint folder (config.json is missing)"
    for flag, path in (("--vae", cfg.vae), ("--val", cfg.val), ("--val-images", cfg.val_images)):
        if path and not Path(path).exists():
            return f"{flag} {path}: no such file or folder"
    from training.data import DatasetError, read_records

    for path in (cfg.train if cfg.train != "shapes" else None, cfg.val):
        if path and not path.endswith(".json"):
            try:
                read_records(path)  # a missing file, bad JSON or a missing field, named by file and line
            except DatasetError as e:
                return str(e)
    if cfg.mode == "qlora":
        import torch

        if not torch.cuda.is_available():
            from training.loop import QLORA_REFUSED

            return QLORA_REFUSED
    return None


def changed_on_resume(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The run's own options given with --resume (only the sitting's, and where it runs, may change)."""
    allowed = set(PLACEMENT) | set(SITTING_FIELDS) | {"help"}
    return [a.option_strings[0] for a in parser._actions
            if a.dest not in allowed and getattr(args, a.dest) != a.default]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.finetune`: check, then train under Ray Train with the run's own console."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        changed = changed_on_resume(parser, args)
        if changed:
            print(
                f"error: --resume continues the run with its own settings; drop {', '.join(changed)}", file=sys.stderr
            )
            return 2
    try:
        cfg = config_from_args(args)
    except (SpecError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    problem = check_inputs(cfg, bool(args.resume))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    from pipelines.cluster import ClusterError, RaySession

    # Ray Train's placement-group cleaner asks the State API (the dashboard) whether the run is alive: keep it.
    session = RaySession(args.address, args.verbose, include_dashboard=True)
    try:
        session.start()
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        with LogFollower(Path(cfg.output) / "log.jsonl", cfg.steps) if not args.verbose else contextlib.nullcontext():
            status = fit(args, cfg)
    finally:
        session.close()
    if status == 0:
        report_end(cfg)
    return status


def fit(args: argparse.Namespace, cfg: FinetuneConfig) -> int:
    """The run under Ray Train's TorchTrainer; 0, or 1 after the one-line error of a failed run."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from training.loop import train_worker

    cpus = args.cpus_per_worker or (1 if args.gpus else max(1, int(ray.cluster_resources().get("CPU", 1))))
    cfg = replace(cfg, threads=None if args.gpus else max(1, int(cpus)))  # a CPU worker uses the CPUs it reserves
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=cfg.to_dict() | {"_resume": bool(args.resume)},
        scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=args.gpus, resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name="finetune", storage_path=str(Path(cfg.output) / "ray")),
    )
    try:
        result = trainer.fit()
    except Exception as e:  # Ray wraps the worker's exception; its message says what went wrong
        print(f"error: training failed: {e}", file=sys.stderr)
        return 1
    if result.error is not None:
        print(f"error: training failed: {result.error}", file=sys.stderr)
        return 1
    return 0


def report_end(cfg: FinetuneConfig) -> None:
    """Where the run's checkpoints are, its last metrics and its best step."""
    final = Path(cfg.output) / "final"
    log_lines = (Path(cfg.output) / "log.jsonl").read_text().splitlines()
    print(f"last metrics: {log_lines[-1] if log_lines else '(none)'}")
    print(f"checkpoint: {final}")
    if (Path(cfg.output) / "best").is_dir():
        best = json.loads((Path(cfg.output) / "best" / "training.json").read_text())
        print(f"best: {Path(cfg.output) / 'best'} (step {best['step']}, {best['best_metric']} "
              f"{best['eval'][best['best_metric']]:.4f})")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
