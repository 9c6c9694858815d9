"""Write synthetic shapes data: a training set for jobs.finetune, or a held-out set with ground truth.

    python -m jobs.make_shapes train --output data/shapes-train --examples 20000 --seed 0 \\
                               --vae checkpoints/paligemma-shapes/vae.npz
    python -m jobs.make_shapes eval --output data/shapes-eval --scenes 200 --words 200 --seed 777

`train` writes images/ and train.jsonl (image, prefix, suffix, task); `eval` writes images/, annotations.json
(COCO) and manifest.parquet (path, image_id, prompt, answer), the set jobs.benchmark --shapes scores. The data
are a pure function of the seed (training/shapes.py has the spec), so a seed names a dataset.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.make_shapes`: write a shapes training set or held-out set to disk."""
    p = argparse.ArgumentParser(
        prog="python -m jobs.make_shapes",
        description=__doc__.split("\n")[0],
        epilog="\n".join(__doc__.split("\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="kind", required=True)
    train = sub.add_parser("train", help="(image, prefix, suffix) JSONL for jobs.finetune")
    train.add_argument("--output", required=True)
    train.add_argument("--examples", type=int, default=1000)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--vae", help="vae.npz to encode segmentation targets (without it: no segment examples)")
    ev = sub.add_parser("eval", help="held-out images, COCO ground truth and expected answers")
    ev.add_argument("--output", required=True)
    ev.add_argument("--scenes", type=int, default=200)
    ev.add_argument("--words", type=int, default=200)
    ev.add_argument("--seed", type=int, default=777)
    args = p.parse_args(argv)
    from training.shapes_dataset import write_benchmark_set, write_training_jsonl

    if args.kind == "train":
        path = write_training_jsonl(args.output, args.examples, args.seed, args.vae)
        print(f"wrote {args.examples} examples to {path}")
    else:
        counts = write_benchmark_set(args.output, args.scenes, args.words, args.seed)
        print(f"wrote {counts['images']} images and {counts['prompts']} prompts to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
