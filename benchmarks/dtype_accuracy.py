"""What bfloat16 costs in accuracy: the bundled shapes model's held-out scores in float32 and in bfloat16.

    python -m benchmarks.dtype_accuracy [--scenes 100] [--seed 777] [--dtypes float32 bfloat16] [--json out.json]

bfloat16 is the opt-in that halves the bytes a decode step reads and lets a CPU with AMX (or AVX-512 bf16) run
its products on those units; float32 stays the CPU default because it gives transformers' tokens. This labels the
same held-out shapes set (training/shapes_dataset.py, a seed no training used) with each dtype, in process, as
evaluation during training does (training/evaluate.py: label_batch, then evals.shapes), and prints the scores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import device_name

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "paligemma-shapes"


def score(dtype: str, folder: Path, checkpoint: Path) -> dict:
    """The held-out scores of the checkpoint loaded in `dtype`, with the seconds labeling took."""
    from decoders import MaskDecoder
    from model import PaliGemma
    from training.evaluate import eval_summary, evaluate_shapes

    model = PaliGemma.from_pretrained(checkpoint, dtype=dtype)
    vae = checkpoint / "vae.npz"
    decoder = MaskDecoder.from_npz(vae) if vae.is_file() else None
    start = time.perf_counter()
    result = evaluate_shapes(model, folder, mask_decoder=decoder)
    return {"dtype": dtype, "seconds": round(time.perf_counter() - start, 1), **eval_summary(result)}


def main(argv: list[str] | None = None) -> list[dict]:
    """Score each dtype on one held-out set and print a table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    p.add_argument("--scenes", type=int, default=100, help="held-out scenes (and as many word images)")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from training.evaluate import ensure_eval_set

    with tempfile.TemporaryDirectory() as tmp:
        folder = ensure_eval_set(Path(tmp), args.scenes, args.seed)
        results = [score(dtype, folder, args.checkpoint) for dtype in args.dtypes]
    print(device_name(torch.device("cpu")))
    keys = [k for k in results[0] if k != "dtype"]
    print(f"{'dtype':>10} " + " ".join(f"{k[:18]:>18}" for k in keys))
    for r in results:
        print(f"{r['dtype']:>10} " + " ".join(f"{r[k]:>18.3f}" for k in keys))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
