"""Evaluation while training: a fixed held-out shapes set labeled in-process and scored like the benchmark.

The set is drawn once per run (training/shapes_dataset.write_benchmark_set with a seed no training stream uses)
into RUN/eval-data; every evaluation labels each of its (image, prompt) rows with `labeling.answers.label_batch`
(what the label job's replicas run) and scores them with `evals.shapes.shapes_scores` (what `jobs.benchmark
--shapes` reports), so a curve and the benchmark measure the same thing on different draws.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image


def ensure_eval_set(folder: Path, scenes: int, seed: int) -> Path:
    """Write the held-out set once (the same seed always draws the same set)."""
    from .shapes_dataset import write_benchmark_set

    stamp = folder / "set.json"
    wanted = {"scenes": scenes, "words": scenes, "seed": seed}
    if not stamp.is_file() or json.loads(stamp.read_text()) != wanted:
        write_benchmark_set(folder, scenes, scenes, seed)
        stamp.write_text(json.dumps(wanted))
    return folder


@torch.no_grad()
def evaluate_shapes(model, folder: Path, mask_decoder=None, batch_size: int = 32, max_new_tokens: int = 128) -> dict:
    """Label every row of the set's manifest with `model` and return shapes_scores plus the headline numbers."""
    import pandas as pd

    from evals.shapes import headline, shapes_scores
    from labeling.answers import label_batch
    from tasks import from_prompt

    manifest = pd.read_parquet(folder / "manifest.parquet").to_dict("records")
    # Rows of one prompt kind together: answers of similar length share a batch, so few rows wait for others.
    order = sorted(range(len(manifest)), key=lambda i: (manifest[i]["prompt"].split(" ")[0], i))
    images: dict[str, Image.Image] = {}
    rows = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = [manifest[i] for i in order[start : start + batch_size]]
            for m in chunk:
                if m["path"] not in images:
                    images[m["path"]] = Image.open(folder / m["path"]).convert("RGB")
            labeled = label_batch(
                model,
                [from_prompt(m["prompt"]) for m in chunk],
                [images[m["path"]] for m in chunk],
                image_ids=[m["image_id"] for m in chunk],
                paths=[m["path"] for m in chunk],
                mask_decoder=mask_decoder,
                max_new_tokens=max_new_tokens,
            )
            rows.extend(item.row for item in labeled)
    finally:
        model.train(was_training)
    scores = shapes_scores(rows, manifest, folder / "annotations.json")
    return {"headline": headline(scores), "scores": scores}


def eval_summary(result: dict) -> dict[str, float]:
    """The numbers a log line keeps: the five headline metrics plus a few that show progress earlier."""
    s = result["scores"]
    return {
        "detection_ap50": s["detection"]["AP50"],
        "detection_ap": s["detection"]["AP"],
        "detection_ar100": s["detection"]["AR100"],
        "segmentation_miou": s["segmentation"]["mIoU"],
        "counting": s["counting"]["exact_match"],
        "ocr_exact": s["ocr"]["exact_match"],
        "ocr_char_accuracy": max(0.0, 1.0 - s["ocr"]["cer"]),
        "caption_exact": s["caption"]["exact_match"],
    }
