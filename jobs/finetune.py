"""Fine-tune PaliGemma (or train a small one from scratch) under Ray Train's TorchTrainer.

    python -m jobs.finetune --model /ckpt/paligemma-3b-pt-224 --train data/train.jsonl --mode lora \\
                            --steps 2000 --batch-size 8 --lr 1e-4 --output /abs/runs/lora
    python -m jobs.finetune --scratch shapes --train shapes --vae checkpoints/paligemma-shapes/vae.npz \\
                            --curriculum shapes --steps 9000 --batch-size 32 --lr 1e-3 --eval-every 500 \\
                            --output /abs/runs/shapes
    python -m jobs.finetune --resume /abs/runs/shapes [--max-minutes 60]       # go on where it stopped

--train is a .jsonl or .parquet file of (image, prefix, suffix) records, or `shapes` for the built-in
synthetic generator (training/shapes.py; --data-seed picks the stream). The loss covers the answer only and the
prompt is the bidirectional prefix, as in PaliGemma's own training. --mode full trains every weight, attention
only the text decoder's attention, lora low-rank adapters (merged into the weights when saved).

--resume RUN continues a stopped run (killed, or ended by --max-minutes) from RUN/last with its optimizer state,
schedule, data position and RNG: the weights come out as if it had never stopped. Its settings are read from
RUN/training_config.json; only --max-minutes (and where Ray runs) may change. last/ is saved every --save-every
steps and every --save-minutes. --eval-every N labels a held-out shapes set (seed --eval-seed, never used for
training) every N steps, logs the benchmark's scores in log.jsonl and draws RUN/curves.png.

Locally this runs one worker on this machine's CPUs; on a cluster (`ray job submit --working-dir . -- python -m
jobs.finetune ... --workers 4 --gpus`) one worker per GPU, with gradients averaged by DDP. The output folder (give
an absolute path under `ray job submit`) gets training_config.json, log.jsonl, `last/` every --save-every steps
and `final/`: Hugging Face checkpoint folders that PaliGemma.from_pretrained and transformers both load.
Exit status: 0 on success, 1 when training failed, 2 for a configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from jobs.cli import command_parser


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m jobs.finetune", __doc__)
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--model", help="checkpoint folder to fine-tune")
    start.add_argument("--scratch", help="train a named size from random initialization (e.g. shapes)")
    start.add_argument("--resume", metavar="RUN", help="continue the run in this folder from its last/ checkpoint")
    p.add_argument("--train", help=".jsonl / .parquet of image, prefix, suffix; or 'shapes'")
    p.add_argument("--output", help="run folder (checkpoints, logs); keep it outside the repository")
    p.add_argument("--mode", choices=("full", "attention", "lora"), default="full", help="(default full)")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16, help="per worker (default 16)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4)")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps (default 100)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0, help="initialization seed (default 0)")
    p.add_argument("--data-seed", type=int, default=0, help="shuffle / generator seed (default 0)")
    p.add_argument("--vae", help="vae.npz; needed for the shapes' segmentation targets")
    p.add_argument("--task-mix", help='shapes only: JSON weights, e.g. \'{"detect": 1, "ocr": 1}\'')
    p.add_argument(
        "--curriculum",
        help="shapes only: a named curriculum (training/recipes.py) or a JSON list of stages, e.g. "
        '\'[{"examples": 20000, "max_objects": 1, "mix": {"detect": 1}}, {"examples": 1}]\'',
    )
    p.add_argument("--bf16", action="store_true", help="autocast matmuls to bfloat16 (faster only with bf16 units)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument(
        "--vision-pretrain",
        type=int,
        default=0,
        metavar="N",
        help="shapes only: pretrain the vision tower on N images' dense labels first",
    )
    p.add_argument("--vision-pretrain-lr", type=float, default=1e-3)
    p.add_argument("--vision-pretrain-words", type=float, default=0.4, help="share of word images in pretraining")
    p.add_argument("--image-size", type=int, help="train at this resolution: position embeddings resized")
    p.add_argument("--vision-lr-scale", type=float, default=1.0, help="the vision tower's share of --lr (default 1)")
    p.add_argument("--pool", type=int, default=1, help="group the examples of N batches by length (default 1: off)")
    p.add_argument("--data-workers", type=int, choices=(0, 1), default=0, help="1: make batches in a second process")
    p.add_argument("--save-dtype", default="float32", help="dtype of the saved weights (default float32)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=0, help="also write last/ every N steps")
    p.add_argument("--save-minutes", type=float, default=5.0, help="write last/ this often (default 5 minutes)")
    p.add_argument("--max-minutes", type=float, help="end this sitting after this much wall-clock time (resumable)")
    p.add_argument("--eval-every", type=int, default=0, help="score the held-out shapes set every N steps")
    p.add_argument("--eval-scenes", type=int, default=50, help="held-out scenes (and as many words) (default 50)")
    p.add_argument("--eval-seed", type=int, default=555, help="held-out set seed (default 555)")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (default 1)")
    p.add_argument("--gpus", action="store_true", help="one GPU per worker")
    p.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (default: all of this machine's)")
    p.add_argument("--address", help="Ray address to join (default: local, or the cluster under ray job submit)")
    return p


def config_from_args(args: argparse.Namespace):
    from training.loop import FinetuneConfig

    if args.resume:
        return resumed_config(args)
    if not args.train or not args.output:
        raise ValueError("--train and --output are required (or --resume RUN)")
    return FinetuneConfig(
        output=str(Path(args.output).absolute()),
        train=args.train if args.train == "shapes" else str(Path(args.train).absolute()),
        model=str(Path(args.model).absolute()) if args.model else None,
        scratch=args.scratch,
        mode=args.mode,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        seed=args.seed,
        data_seed=args.data_seed,
        vae=str(Path(args.vae).absolute()) if args.vae else None,
        bf16=args.bf16,
        log_every=args.log_every,
        save_every=args.save_every,
        save_dtype=args.save_dtype,
        save_minutes=args.save_minutes,
        max_minutes=args.max_minutes,
        task_mix=json.loads(args.task_mix) if args.task_mix else {},
        stages=curriculum_stages(args.curriculum),
        pool=args.pool,
        data_workers=args.data_workers,
        eval_every=args.eval_every,
        eval_scenes=args.eval_scenes,
        eval_seed=args.eval_seed,
        compile=args.compile,
        vision_pretrain=args.vision_pretrain,
        vision_pretrain_lr=args.vision_pretrain_lr,
        vision_lr_scale=args.vision_lr_scale,
        vision_pretrain_words=args.vision_pretrain_words,
        image_size=args.image_size,
    )


def curriculum_stages(text: str | None) -> list[dict]:
    """--curriculum: a name from training/recipes.py or a JSON list of stages."""
    if not text:
        return []
    from training.recipes import CURRICULA

    if text in CURRICULA:
        return [dict(stage) for stage in CURRICULA[text]]
    try:
        stages = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--curriculum: not a known name ({', '.join(CURRICULA)}) nor a JSON list ({e})") from e
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise ValueError("--curriculum: expected a JSON list of stages (objects)")
    return stages


# Options that may change between sittings of one run; every other one is the run's and must not.
SITTING_OPTIONS = ("max_minutes",)


def resumed_config(args: argparse.Namespace):
    from training.loop import FinetuneConfig

    run = Path(args.resume)
    saved = run / "training_config.json"
    if not saved.is_file():
        raise ValueError(f"--resume {run}: not a run folder (training_config.json is missing)")
    if not any((run / name / "trainer_state.pt").is_file() for name in ("last", "last.old")):
        raise ValueError(f"--resume {run}: nothing to resume (no last/ checkpoint was saved yet)")
    cfg = FinetuneConfig(**json.loads(saved.read_text()))
    if args.max_minutes is not None:
        cfg.max_minutes = args.max_minutes
    return cfg


def check_inputs(args: argparse.Namespace) -> str | None:
    """A message for inputs that would only fail inside a worker, minutes later; None when they look right."""
    if args.resume:
        return None
    if args.model and not (Path(args.model) / "config.json").is_file():
        return f"{args.model}: not a checkpoint folder (config.json is missing)"
    if args.vae and not Path(args.vae).is_file():
        return f"{args.vae}: file is missing"
    if args.train != "shapes":
        from training.data import DatasetError, read_records

        try:
            read_records(args.train)  # a missing file, bad JSON or a missing field, named by file and line
        except DatasetError as e:
            return str(e)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        allowed = {"resume", "max_minutes", "workers", "gpus", "cpus_per_worker", "address"}
        changed = [a.option_strings[0] for a in parser._actions
                   if a.dest not in allowed | {"help"} and getattr(args, a.dest) != a.default]  # fmt: skip
        if changed:
            drop = ", ".join(changed)
            print(f"error: --resume continues the run with its own settings; drop {drop}", file=sys.stderr)
            return 2
    try:
        cfg = config_from_args(args)
    except (ValueError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    problem = check_inputs(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from training.loop import train_worker

    if not ray.is_initialized():
        ray.init(address=args.address)
    cpus = args.cpus_per_worker or (1 if args.gpus else max(1, int(ray.cluster_resources().get("CPU", 1))))
    cfg.threads = None if args.gpus else max(1, int(cpus))  # a CPU worker uses the CPUs it reserves
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=asdict(cfg) | {"_resume": bool(args.resume)},
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
    final = Path(cfg.output) / "final"
    log_lines = (Path(cfg.output) / "log.jsonl").read_text().splitlines()
    print(f"last metrics: {log_lines[-1] if log_lines else '(none)'}")
    print(f"checkpoint: {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
