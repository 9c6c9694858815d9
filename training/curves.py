"""Learning curves from a run's log.jsonl: held-out scores and training losses against examples seen."""

from __future__ import annotations

import json
from pathlib import Path

HEADLINE = {
    "detection_ap50": "detection AP50",
    "segmentation_miou": "segmentation mIoU",
    "counting": "counting exact",
    "ocr_exact": "OCR exact",
    "ocr_char_accuracy": "OCR characters",
    "caption_exact": "caption exact",
}
TARGETS = {"detection_ap50": 0.7, "segmentation_miou": 0.6, "counting": 0.8, "ocr_exact": 0.7, "caption_exact": 0.5}
# Validation scores of a run with --val (training/validate.py).
VALIDATION = {
    "detect_ap50": "val detect AP50",
    "detect_ap": "val detect AP",
    "segment_ap50": "val segment AP50",
    "segment_ap": "val segment AP",
    "caption_cider": "val caption CIDEr",
    "ocr_exact": "val OCR exact",
    "answer_anls": "val answer ANLS",
    "exact": "val exact",
}


def read_log(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(training lines, evaluation lines) of a log.jsonl."""
    train, evals = [], []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            (evals if "eval" in record else train).append(record)
    return train, evals


def plot_curves(log: str | Path, out: str | Path, title: str = "") -> Path:
    """Two panels: held-out scores (dashed lines: the benchmark's targets) and per-task training loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals = read_log(log)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, name in (HEADLINE | VALIDATION).items():
        points = [(e["examples"], e["eval"][key]) for e in evals if key in e["eval"]]
        if points:
            xs, ys = zip(*points, strict=True)
            (line,) = left.plot(xs, ys, marker="o", markersize=3, label=name)
            if key in TARGETS:
                left.axhline(TARGETS[key], color=line.get_color(), linestyle="--", linewidth=0.8)
    top = max([1.02] + [y * 1.05 for line in left.lines for y in line.get_ydata()])  # CIDEr may pass 1
    left.set(xlabel="training examples", ylabel="held-out score", ylim=(0, top), title="held-out set")
    if left.lines:
        left.legend(fontsize=8, loc="upper left")
    tasks = sorted({k for r in train for k in r if k.startswith("loss/")})
    for key in tasks:
        points = [(r["examples"], r[key]) for r in train if key in r]
        xs, ys = zip(*points, strict=True)
        right.plot(xs, ys, label=key.removeprefix("loss/"))
    right.set(xlabel="training examples", ylabel="loss (nats per answer token)", yscale="log", title="training loss")
    if tasks:
        right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
