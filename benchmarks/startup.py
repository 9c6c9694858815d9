"""How long a user waits: `python -m jobs.label` with the bundled model on 1, 12 and 200 images, in a fresh process
each, timed from outside (wall) and inside (summary.json's phases, seconds from the process's start).

    python -m benchmarks.startup [--inputs 1 12 200] [--repeats 3] [--task caption] [--tree CHECKOUT]

Phases: source listed, checkpoint checked, inputs planned, ray started, first row, last row, outputs written; the
wall time adds Ray's shutdown and the interpreter's exit. The images are the bundled examples (examples/shapes),
repeated under other names to reach N. --tree runs another checkout's command on the same images (phases are
printed when that checkout writes them). Medians of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("source listed", "checkpoint checked", "inputs planned", "ray started", "first row", "last row",
          "outputs written")  # fmt: skip


def images(folder: Path, count: int) -> Path:
    """`count` image files from the bundled examples (copies under other names beyond the first twelve)."""
    source = sorted((ROOT / "examples" / "shapes" / "images").glob("*.png"))
    folder.mkdir(parents=True)
    for i in range(count):
        shutil.copy(source[i % len(source)], folder / f"{i:05d}.png")
    return folder


def one_run(tree: Path, folder: Path, out: Path, task: str) -> dict:
    """One fresh `jobs.label` process: its wall time and the phases it recorded."""
    cmd = [sys.executable, "-m", "jobs.label", "--checkpoint", str(ROOT / "checkpoints" / "paligemma-shapes"),
           "--images", str(folder), "--task", task, "--output", str(out), "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"jobs.label failed: {done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"wall": wall, **summary.get("phases", {})}


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the sizes, print a table of medians, return the results."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, nargs="+", default=[1, 12, 200])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--task", default="caption")
    p.add_argument("--tree", type=Path, default=ROOT)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    results = []
    print(f"{'inputs':>6} {'wall s':>7} " + " ".join(f"{name:>18}" for name in PHASES))
    for n in args.inputs:
        with tempfile.TemporaryDirectory() as tmp:
            folder = images(Path(tmp) / "images", n)
            runs = [one_run(args.tree, folder, Path(tmp) / f"out{r}", args.task) for r in range(args.repeats)]
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0] if all(k in r for r in runs)}
        results.append({"inputs": n, "runs": runs, "median": median})
        cells = " ".join(f"{median.get(name, float('nan')):>18.1f}" for name in PHASES)
        print(f"{n:>6} {median['wall']:>7.1f} {cells}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
