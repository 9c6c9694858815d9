"""`make demo`: label the bundled example shapes with the bundled checkpoint, score them, draw previews.

The checkpoint (checkpoints/paligemma-shapes) is a small PaliGemma trained from scratch by this project's own
fine-tuning job on synthetic shapes; its model card says how, and how far that training got. The demo runs the
label job (the same Ray pipeline as on a real dataset) over examples/shapes/manifest.parquet: detection,
per-class segmentation, captions, counting questions and OCR. It then scores the rows against the examples'
COCO ground truth and expected answers with evals, prints the numbers and writes annotated previews.

    python -m jobs.demo [--output DIR] [--checkpoint DIR] [--examples DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "paligemma-shapes"
EXAMPLES = ROOT / "examples" / "shapes"


def measured_headline(checkpoint: Path) -> tuple[int, str] | None:
    """What the checkpoint's own benchmark measured, so the demo's scores can be read against it.

    The demo's few examples give noisy scores; the model card's 200 held-out scenes are the reference.
    """
    path = checkpoint / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    line = ", ".join(f"{name} {value:.2f}" for name, value in metrics.get("headline", {}).items())
    return metrics.get("shapes", 0), line


def main(argv: list[str] | None = None) -> int:
    """`make demo`: label the examples with the bundled checkpoint, print what it measured and scored."""
    p = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(CHECKPOINT))
    p.add_argument("--examples", default=str(EXAMPLES), help="a set written by `jobs.make_shapes eval`")
    p.add_argument("--output", default=str(ROOT / "demo_out" / "shapes"))
    args = p.parse_args(argv)

    import shutil

    from evals.shapes import headline
    from jobs.benchmark import label_and_score_shapes
    from specs.label import LabelJob, OutputSpec, ReplicaSpec, SourceSpec, TaskSpec

    checkpoint, examples, out = Path(args.checkpoint), Path(args.examples), Path(args.output)
    if out.exists():  # a fresh run each time: the demo shows what this checkout's checkpoint does
        shutil.rmtree(out)
    vae = checkpoint / "vae.npz"
    job = LabelJob(
        source=SourceSpec(manifest=str(examples / "manifest.parquet")),
        tasks=TaskSpec(),  # every row of the manifest brings its prompt
        replica=ReplicaSpec(
            checkpoint=str(checkpoint), vae=str(vae) if vae.is_file() else None, max_new_tokens=128, batch_size=16
        ),  # fmt: skip
        output=OutputSpec(output=str(out), previews=12, progress=False),
    )
    print(f"checkpoint: {checkpoint}\nexamples:   {examples / 'manifest.parquet'}")
    measured = measured_headline(checkpoint)
    if measured:
        print(f"measured on {measured[0]} held-out scenes (its README.md):  " + measured[1])
    summary, status, rows, scores = label_and_score_shapes(job, examples)
    if summary is None:
        return status
    print("\nsome answers:")
    for row in sorted(rows, key=lambda r: (r["image_id"], r["prompt"]))[:: max(1, len(rows) // 8)]:
        print(f"  image {row['image_id']:>2}  {row['prompt']!r:45} -> {row['text']!r}")
    det = scores["detection"]
    print(f"\nCOCO boxes: AP {det['AP']:.3f}  AP50 {det['AP50']:.3f}  AP75 {det['AP75']:.3f}  AR100 {det['AR100']:.3f}")
    seg = scores["segmentation"]["coco_segm"]
    print(f"COCO masks: AP {seg['AP']:.3f}  AP50 {seg['AP50']:.3f}")
    for name, value in headline(scores).items():
        print(f"{name:>20}: {value:.3f}")
    (out / "metrics.json").write_text(
        json.dumps({"scores": scores, "labeling": asdict(summary)}, indent=2, default=str)
    )
    print(f"\nwrote {out / 'metrics.json'}, previews in {out / 'previews'}, rows in {out / 'predictions'}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
