"""Precision-recall plot of a COCO evaluation, as a PNG.

Drawn on a bare matplotlib `Figure` (Agg canvas) rather than through pyplot, so that it needs no display, leaves
no global figure state behind, and is safe to call from worker processes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evals.coco import CocoEvaluation


def mean_pr_curve(precision: np.ndarray, t: int | None) -> np.ndarray:
    """float[R]: precision at each recall threshold, averaged over categories with ground truth.

    precision: COCOeval's [T, R, K, A, M]; area 'all' and the largest maxDets are used. t: one IoU threshold's
    index, or None for the mean over all thresholds (the curve whose area is AP). -1 entries (no ground truth)
    are left out; a recall level no detection reaches has precision 0, as COCOeval fills it.
    """
    p = precision[:, :, :, 0, -1]  # [T, R, K]
    p = p if t is None else p[t : t + 1]
    valid = p > -1
    count = valid.sum(axis=(0, 2))
    total = np.where(valid, p, 0.0).sum(axis=(0, 2))
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def plot_pr(evaluation: CocoEvaluation, path: str | Path, *, max_classes: int = 0) -> Path:
    """Write the PR curves (IoU 0.50, 0.75, mean over 0.50:0.95) to `path` (PNG) and return it.

    max_classes: also draw the IoU-0.50 curve of up to this many classes (most ground truth first), thin.
    """
    from matplotlib.figure import Figure

    path = Path(path)
    recall = evaluation.recall_thresholds
    thresholds = evaluation.iou_thresholds
    fig = Figure(figsize=(6, 5), dpi=100)
    ax = fig.add_subplot()
    for label, t in (("IoU 0.50", 0.5), ("IoU 0.75", 0.75), ("IoU 0.50:0.95", None)):
        index = None if t is None else int(np.argmin(np.abs(thresholds - t)))
        curve = mean_pr_curve(evaluation.precision, index)
        ap = float(curve.mean()) if index is not None else evaluation.stats["AP"]
        ax.plot(recall, curve, linewidth=2, label=f"{label} (AP {ap * 100:.1f})")
    if max_classes:
        t50 = int(np.argmin(np.abs(thresholds - 0.5)))
        ranked = sorted(range(len(evaluation.per_class)), key=lambda k: -evaluation.per_class[k].num_gt)
        for k in ranked[:max_classes]:
            p = evaluation.precision[t50, :, k, 0, -1]
            if (p > -1).all():
                ax.plot(recall, p, linewidth=0.7, alpha=0.6, label=f"{evaluation.per_class[k].name} (IoU 0.50)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"{evaluation.iou_type}: precision-recall (area all, 100 detections)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
