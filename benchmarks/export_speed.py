"""YOLO export of a label run over a Parquet dataset of image bytes: `python -m jobs.export --format yolo`, timed.

    python -m benchmarks.export_speed [--rows 2000 20000] [--tree CHECKOUT]

For each size N it writes a Parquet dataset of N small PNG images (Hugging Face's {bytes, path} struct), a label
run over it (N detect rows with one object each, in parts of 1,000 rows, and the run's source record), then runs
the export command in a fresh process and reports its wall time. --tree runs the command of another checkout of
this project on the same files (how docs/PERFORMANCE.md measured the code before the export read the dataset in
one pass: each row's image was looked up by scanning the whole dataset, so the export grew with N squared).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS_PER_PART = 1000


def write_dataset(folder: Path, rows: int) -> Path:
    """N distinct 24 x 24 PNG images in one Parquet file, as {bytes, path} structs."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for i in range(rows):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": f"img{i:06d}.png"})
    path = folder / "dataset.parquet"
    pq.write_table(pa.table({"image": images}), path, row_group_size=1024)
    return path


def write_run(folder: Path, dataset: Path, rows: int, columns: list[str] | None = None) -> Path:
    """A label run's output folder: N detect rows (one object each) and the Parquet source's record. columns:
    the row columns to write (an older checkout's schema has fewer)."""
    import pyarrow.parquet as pq

    from rows import rows_to_table
    from sources import ParquetSource, stable_image_id
    from storage import locate

    out = folder / "run"
    (out / "predictions").mkdir(parents=True)
    for start in range(0, rows, ROWS_PER_PART):
        batch = []
        for i in range(start, min(rows, start + ROWS_PER_PART)):
            name = f"img{i:06d}.png"
            batch.append({"image_id": stable_image_id(name), "path": name, "width": 24, "height": 24,
                          "task": "detect", "prompt": "detect cat", "text": "",
                          "objects": [{"label": "cat", "box": [2.0, 3.0, 20.0, 18.0], "score": 0.9, "mask": None}],
                          "error": None, "model": "m", "seconds": 0.01})  # fmt: skip
        table = rows_to_table(batch)
        # Parts without commit records, as every version of the project reads them (written whole).
        pq.write_table(table.select(columns) if columns else table, out / "predictions" / f"part-{start:08d}.parquet")
    ParquetSource(str(dataset), "image", ("image",)).write_record(locate(out))
    (out / "run.json").write_text(json.dumps({"checkpoint": "/ckpt/m"}))
    return out


def row_columns(tree: Path) -> list[str]:
    """The row columns of a checkout's output schema (read from its rows/schema.py without importing it)."""
    import re

    from rows import ROW_SCHEMA

    text = (tree / "rows" / "schema.py").read_text()
    return [name for name in ROW_SCHEMA.names if re.search(rf'\("{name}", pa\.', text)]


def time_export(tree: Path, run: Path, target: Path) -> dict:
    """Run `python -m jobs.export` of the checkout `tree` in a fresh process; its wall time and counts."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "jobs.export", "--predictions", str(run), "--format", "yolo", "--output", str(target)],
        cwd=tree, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(tree)), check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"jobs.export failed: {done.stderr[-2000:]}")
    return {"seconds": round(seconds, 2), "counts": json.loads(done.stdout.strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> list[dict]:
    """Time the export for each --rows size; prints one line each and returns the results."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1], help="the checkout to time")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    results = []
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            run = write_run(folder, write_dataset(folder, rows), rows, row_columns(args.tree))
            result = {"rows": rows, "tree": str(args.tree)} | time_export(args.tree, run, folder / "yolo")
        assert result["counts"]["images"] == rows, result
        print(f"{rows:>7} rows: YOLO export {result['seconds']:.1f} s ({rows / result['seconds']:.0f} rows/s)")
        results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
