"""Transfer of a never-seen class on this CPU: stars, fine-tuned from the bundled shapes model in minutes.

    python -m benchmarks.transfer --output /abs/transfer            # LoRA and full, 15 minutes each, 1 thread
    python -m benchmarks.transfer --output /abs/transfer --modes lora --minutes 5 --checkpoint OTHER

What it does, as a user would with their own data: draws a COCO dataset of scenes where half the objects are
stars (training/novel_shapes.py; train, validation and test sets from seeds 1001, 1002, 1003), turns it into
records with `jobs.make_records --coco ... --task detect --subsets 3` (prompt `detect circle ; square ; triangle ;
star`, and three more per image naming random subsets of the classes, so that the tuned model still answers the
three-class prompt it was trained on), fine-tunes with the transfer defaults below through the same code as
`jobs.finetune` (training.loop.train) with `--val` on the validation records and `--max-minutes` as the budget
(or, with `--cpu-minutes M`, as many steps as M minutes of this process's CPU time hold, measured on a probe),
and scores RUN/best/ on

- the test set: AP50 of the new class (star) and of the old ones, prompt listing all four classes;
- the held-out shapes benchmark (training/shapes_dataset.py, seed 777, prompt `detect circle ; square ;
  triangle`): AP50 of the old classes, before and after, so that forgetting shows.

Transfer defaults (TRANSFER below): batch 16, warm-up 20 steps, cosine to 10 %, evaluation every 60 steps, flips
(--hflip 0.5), bf16 autocast when the CPU has bf16 units; LoRA rank 16, alpha 32, lr 1e-3 on the text decoder's
projections; full fine-tuning lr 2e-4 with the vision tower at a tenth. Writes OUT/report.json, OUT/report.md and
each run's curves.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "paligemma-shapes"
SEEDS = {"train": 1001, "val": 1002, "test": 1003}
COMMON = {"batch_size": 16, "warmup": 20, "eval_every": 60, "log_every": 20, "hflip": 0.5, "save_minutes": 60.0,
          "eval_max_new_tokens": 64}  # fmt: skip
TRANSFER = {
    "lora": {"mode": "lora", "lr": 1e-3, "lora_rank": 16, "lora_alpha": 32.0},
    "full": {"mode": "full", "lr": 2e-4, "vision_lr_scale": 0.1},
}


def has_bf16_units() -> bool:
    """AMX or AVX-512 BF16 in /proc/cpuinfo: where bf16 autocast pays on a CPU."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def make_data(out: Path, sizes: dict[str, int], vae: Path) -> dict[str, Path]:
    from jobs.make_records import main as make_records
    from training.novel_shapes import write_coco_set

    paths = {}
    for split, n in sizes.items():
        folder = out / "data" / split
        ann = folder / "annotations.json"
        if not ann.is_file():
            write_coco_set(folder, n, SEEDS[split])
        paths[f"{split}_coco"] = ann
        if split != "test":
            records = folder / "records.jsonl"
            if not records.is_file():
                make_records(["--coco", str(ann), "--task", "detect", "--subsets", "3", "--output", str(records)])
            paths[split] = records
    return paths


def detect_ap50(model, coco: Path, prompt_classes: tuple[str, ...], batch: int = 16) -> dict[str, float]:
    """AP50 overall and per class of `model` on a COCO file, prompt `detect <classes>`, greedy decoding."""
    from PIL import Image

    from evals.coco import evaluate
    from labeling.answers import label_batch
    from rows import rows_to_coco_results
    from tasks import get_task

    data = json.loads(coco.read_text())
    task = get_task("detect", classes=list(prompt_classes))
    rows = []
    for start in range(0, len(data["images"]), batch):
        chunk = data["images"][start : start + batch]
        images = [Image.open(coco.parent / im["file_name"]).convert("RGB") for im in chunk]
        rows += [x.row for x in label_batch(model, [task] * len(chunk), images, image_ids=[im["id"] for im in chunk],
                                            max_new_tokens=64)]  # fmt: skip
    results, _ = rows_to_coco_results(rows, data["categories"])
    wanted = {c["id"] for c in data["categories"] if c["name"] in prompt_classes}
    gt = data | {"categories": [c for c in data["categories"] if c["id"] in wanted],
                 "annotations": [a for a in data["annotations"] if a["category_id"] in wanted]}  # fmt: skip
    scores = evaluate(gt, results, "bbox")
    return {"AP50": scores["AP50"]} | {c["name"]: c["AP50"] for c in scores["per_class"]}


def score(model, paths: dict[str, Path], shapes_set: Path) -> dict:
    from training.novel_shapes import ALL_CLASSES
    from training.shapes import CLASSES

    test = detect_ap50(model, paths["test_coco"], ALL_CLASSES)
    old = detect_ap50(model, shapes_set / "annotations.json", CLASSES)
    return {"test": test, "shapes_benchmark": old}


def cpu_steps(cfg, minutes: float) -> int:
    """The steps whose CPU time (steps, plus the evaluations every eval_every steps) fits `minutes` of this
    process's CPU time, from a probe of 8 steps and one evaluation of a throw-away trainer. On a shared machine
    a wall-clock budget (--max-minutes) measures the neighbours as much as the run; CPU time does not."""
    import dataclasses
    import shutil

    from training.loop import Trainer

    probe_dir = Path(cfg.output + "-probe")
    probe = dataclasses.replace(cfg, output=str(probe_dir), steps=100, max_minutes=None)
    trainer = Trainer(probe, 0, 1, "cpu", None, None, lambda _: None)
    data = trainer.batches(0)
    times = []
    for step in range(8):
        batch = data.get(step)
        t = time.process_time()
        trainer.train_step(batch, step)
        times.append(time.process_time() - t)
    data.close()
    t = time.process_time()
    trainer.scores()
    per_eval = time.process_time() - t
    per_step = sorted(times[1:])[len(times[1:]) // 2] + 0.05  # the median, plus making the batch
    shutil.rmtree(probe_dir, ignore_errors=True)
    budget = 0.95 * minutes * 60 - per_eval
    return max(cfg.warmup + 1, int(budget / (per_step + per_eval / cfg.eval_every)))


def run_mode(mode: str, args, paths: dict[str, Path]) -> tuple[Path, float, float]:
    import dataclasses

    from training.loop import FinetuneConfig, train

    run = Path(args.output) / f"run-{mode}"
    settings = COMMON | TRANSFER[mode] | {"bf16": has_bf16_units(), "threads": args.threads}
    cfg = FinetuneConfig(output=str(run), model=str(Path(args.checkpoint).absolute()), train=str(paths["train"]),
                         val=str(paths["val"]), max_minutes=args.minutes, **settings)  # fmt: skip
    budget = f"--max-minutes {args.minutes:g}"
    if args.cpu_minutes:
        cfg = dataclasses.replace(cfg, steps=cpu_steps(cfg, args.cpu_minutes), max_minutes=None)
        budget = f"--steps {cfg.steps}"
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items() if k not in ("bf16", "threads"))
    print(f"== {mode}: python -m jobs.finetune --model {cfg.model} --train {cfg.train} --val {cfg.val} "
          f"{budget} {flags}{' --bf16' if cfg.bf16 else ''} --cpus-per-worker {args.threads} "
          f"--output {run}", flush=True)  # fmt: skip
    started, wall = time.process_time(), time.perf_counter()
    train(cfg)
    return run, (time.process_time() - started) / 60, (time.perf_counter() - wall) / 60


def load_run(run: Path, base: Path):
    from model import PaliGemma
    from model.adapters import is_adapter, load_with_adapter

    best = run / "best"
    return load_with_adapter(base, best) if is_adapter(best) else PaliGemma.from_pretrained(best)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="folder for the data, the runs and the report")
    p.add_argument("--checkpoint", default=str(CHECKPOINT), help="the model to transfer from (default: bundled)")
    p.add_argument("--modes", default="lora,full", help="comma-separated: lora, full (default both)")
    p.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget of each fine-tune (default 15)")
    p.add_argument(
        "--cpu-minutes",
        type=float,
        help="budget each fine-tune in CPU minutes instead (steps chosen "
        "from a probe; for a shared machine, where wall-clock minutes measure the neighbours)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--train-images", type=int, default=3000)
    p.add_argument("--val-images", type=int, default=30)
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument("--shapes-scenes", type=int, default=200, help="held-out shapes scenes for the old classes")
    args = p.parse_args(argv)
    import torch

    from benchmarks.common import cpu_model
    from model import PaliGemma
    from training.shapes_dataset import write_benchmark_set

    torch.set_num_threads(args.threads)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(args.checkpoint)
    paths = make_data(out, {"train": args.train_images, "val": args.val_images, "test": args.test_images},
                      base / "vae.npz")  # fmt: skip
    shapes_set = out / "data" / "shapes-777"
    if not (shapes_set / "annotations.json").is_file():
        write_benchmark_set(shapes_set, args.shapes_scenes, 0, 777)
    report = {"machine": f"{cpu_model()}, {args.threads} thread(s)", "minutes": args.minutes,
              "cpu_minutes": args.cpu_minutes,
              "before": score(PaliGemma.from_pretrained(base), paths, shapes_set), "runs": {}}  # fmt: skip
    print(f"before: {json.dumps(report['before'])}", flush=True)
    for mode in args.modes.split(","):
        run, cpu_minutes, wall_minutes = run_mode(mode.strip(), args, paths)
        best = json.loads((run / "best" / "training.json").read_text())
        steps = json.loads((run / "training_config.json").read_text())["steps"]
        after = score(load_run(run, base), paths, shapes_set)
        report["runs"][mode] = {"after": after, "cpu_minutes": cpu_minutes, "wall_minutes": wall_minutes,
                                "best_step": best["step"],
                                "steps": steps, "curves": str(run / "curves.png")}  # fmt: skip
        print(f"{mode}: {json.dumps(report['runs'][mode])}", flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    print(markdown(report))
    return report


def markdown(report: dict) -> str:
    before = report["before"]
    budget = f"{report['cpu_minutes']:g} CPU minutes" if report.get("cpu_minutes") else f"{report['minutes']:g} minutes"
    lines = [f"Machine: {report['machine']}; budget {budget} a run.", "",
             "| model | steps (best) | CPU min | wall min | star AP50 (test) | old classes AP50 (test) | shapes "
             "benchmark AP50 (old classes) | kept |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip

    def old(test: dict) -> float:
        values = [test[c] for c in ("circle", "square", "triangle") if c in test]
        return sum(values) / len(values)

    lines.append(f"| bundled | - | - | - | {before['test'].get('star', 0):.3f} | {old(before['test']):.3f} | "
                 f"{before['shapes_benchmark']['AP50']:.3f} | - |")  # fmt: skip
    for mode, r in report["runs"].items():
        kept = r["after"]["shapes_benchmark"]["AP50"] / max(before["shapes_benchmark"]["AP50"], 1e-9)
        lines.append(f"| {mode} | {r['steps']} ({r['best_step']}) | {r['cpu_minutes']:.1f} | "
                     f"{r.get('wall_minutes', 0):.1f} | "
                     f"{r['after']['test'].get('star', 0):.3f} | {old(r['after']['test']):.3f} | "
                     f"{r['after']['shapes_benchmark']['AP50']:.3f} | {kept:.2f}x |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
