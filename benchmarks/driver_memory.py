"""The label job's driver memory as the output grows: peak RSS of the end-of-run exports (COCO results and
dataset files, the summary) over N synthetic rows, and of planning N inputs from a manifest.

    python -m benchmarks.driver_memory [--rows 10000 100000 1000000]

Each measurement runs in a fresh process: for the exports its peak resident set size (`ru_maxrss`) next to the
size it had after its imports, for the plan the growth over that size, so the numbers are the driver's own.
Rows are detect rows with 3 objects each, in parts of 10,000 rows as the job writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS_PER_PART = 10_000


def synthetic_parts(folder: Path, rows: int) -> None:
    """Write `rows` detect rows (3 objects each) as committed parts of ROWS_PER_PART rows, as the job writes them."""
    import numpy as np

    from rows import PartStore, rows_to_table

    store = PartStore(folder / "predictions")
    store.prepare()
    rng = np.random.default_rng(0)
    for start in range(0, rows, ROWS_PER_PART):
        batch = []
        for i in range(start, min(rows, start + ROWS_PER_PART)):
            objects = [{"label": ("cat", "dog", "bird")[k], "box": [float(v) for v in rng.uniform(0, 300, 4)],
                        "score": float(rng.uniform()), "mask": None} for k in range(3)]  # fmt: skip
            batch.append({"image_id": i + 1, "path": f"/data/images/{i:08d}.jpg", "width": 640, "height": 480,
                          "task": "detect", "prompt": "detect cat ; dog ; bird", "text": "", "objects": objects,
                          "error": None, "model": "m", "seconds": 0.01})  # fmt: skip
        store.write(rows_to_table(batch))


def manifest(folder: Path, rows: int) -> Path:
    """A manifest Parquet file of `rows` image paths, to time planning that many inputs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / "manifest.parquet"
    paths = pa.array([f"s3://bucket/images/{i:08d}.jpg" for i in range(rows)])
    pq.write_table(pa.table({"path": paths}), path)
    return path


def child(kind: str, folder: str) -> None:
    """Runs in the measured process: imports first, then the work; prints JSON with the peak memory."""
    import numpy as np

    from exports import coco
    from pipelines.finish import export_input
    from pipelines.output import OutputFolder
    from sources import ITEM_SCHEMA, TableSource, manifest_source

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if kind == "export":
        out = OutputFolder(folder)
        job = export_input(out, TableSource("folder", ITEM_SCHEMA.empty_table()), ["cat", "dog", "bird"], "m")
        coco.write_results(job, out.root.join("coco_results.json"))
        coco.write_dataset(job, out.root.join("coco_dataset.json"))
        count = out.parts.count()
    else:
        source = manifest_source(Path(folder) / "manifest.parquet")
        plan = source.plan(["caption en"], np.empty(0, np.int64), None)
        count = plan.todo.num_rows
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    record = {"rows": count, "extra_mib": (peak - base) / 1024, "peak_mib": peak / 1024, "base_mib": base / 1024}
    print(json.dumps(record | {"seconds": time.perf_counter() - start}))


def measure(kind: str, folder: Path) -> dict:
    """Run one measurement (`export` or `plan`) in a fresh process and return its JSON record."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "benchmarks.driver_memory", "--child", kind, str(folder)],
                          cwd=root, capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=str(root)))  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """Measure the exports and the plan at each --rows count and print one line each."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    head = f"{'rows':>9} {'exports: peak MiB':>18} {'(imports)':>10} {'s':>6} {'plan: extra MiB':>16}"
    print(f"{head} {'bytes/input':>12} {'s':>6}")
    for rows in args.rows:
        tmp = Path(tempfile.mkdtemp(prefix="driver-memory-"))
        try:
            synthetic_parts(tmp / "out", rows)
            export = measure("export", tmp / "out")
            manifest(tmp, rows)
            plan = measure("plan", tmp)
            per_input = plan["extra_mib"] * 2**20 / rows
            print(f"{rows:>9} {export['peak_mib']:>18.1f} {export['base_mib']:>10.1f} {export['seconds']:>6.1f} "
                  f"{plan['extra_mib']:>16.1f} {per_input:>12.0f} {plan['seconds']:>6.1f}")  # fmt: skip
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
