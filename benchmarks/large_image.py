"""One very large image through the tiled label job: its peak memory, per process and in all, and its speed.

    python -m benchmarks.large_image [--side 12000] [--tile 224] [--checkpoint checkpoints/paligemma-shapes]

Draws a side x side PNG (a light background with a few hundred small shapes, so the file is small but the decoded
image is side x side x 3 bytes: 432 MB at 12,000 px), then runs `python -m jobs.label --tile ... --max-pixels
200000000` on it in a fresh process and samples the resident memory of every process of that job (the driver,
Ray's decode worker and the replica) every half second. Prints the peak of each process, the peak of their sum,
the number of tiles, tiles/s and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def draw(path: Path, side: int, seed: int = 0) -> None:
    """A large, mostly empty scene: a light background and small shapes, saved as PNG."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (side, side), (235, 235, 228))
    pen = ImageDraw.Draw(image)
    for _ in range(side // 40):
        x, y, w = int(rng.integers(0, side - 80)), int(rng.integers(0, side - 80)), int(rng.integers(20, 61))
        color = tuple(int(c) for c in rng.choice([(220, 40, 40), (40, 80, 220), (40, 170, 60)]))
        (pen.ellipse if rng.random() < 0.5 else pen.rectangle)((x, y, x + w, y + w), fill=color)
    image.save(path, optimize=False, compress_level=1)


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _session(sid: int) -> list[tuple[int, str]]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid:  # the session id
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        name = f.read().split(b"\0")[0].decode(errors="replace")
                    out.append((int(entry), name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def watch(process: subprocess.Popen, peaks: dict, names: dict, stop: threading.Event) -> None:
    """Sample the RSS of every process of the job's session until `stop` (peaks by pid; names: a pid's first
    name, e.g. ray::MapWorker(MapBatches(Replica)))."""
    while not stop.wait(0.5):
        total = 0.0
        for pid, name in _session(process.pid):
            rss = _rss_mib(pid)
            total += rss
            names.setdefault(pid, f"{pid} {os.path.basename(name)}")
            peaks[pid] = max(peaks.get(pid, 0.0), rss)
        peaks["(all)"] = max(peaks.get("(all)", 0.0), total)


def main(argv: list[str] | None = None) -> dict:
    """Draw, label with tiles, report (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=12000)
    p.add_argument("--tile", type=int, default=224)
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "paligemma-shapes"))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        images, out = Path(tmp) / "images", Path(tmp) / "out"
        images.mkdir()
        draw(images / "large.png", args.side)
        cmd = [sys.executable, "-m", "jobs.label", "--checkpoint", args.checkpoint, "--images", str(images),
               "--task", "detect", "--classes", "circle ; square ; triangle", "--tile", str(args.tile),
               "--max-pixels", "200000000", "--max-new-tokens", "64", "--output", str(out),
               "--no-progress"]  # fmt: skip
        peaks: dict = {}
        names: dict = {}
        stop = threading.Event()
        start = time.perf_counter()
        process = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        thread = threading.Thread(target=watch, args=(process, peaks, names, stop), daemon=True)
        thread.start()
        _, err = process.communicate()
        stop.set()
        thread.join()
        wall = time.perf_counter() - start
        if process.returncode:
            raise RuntimeError(f"the label job failed: {err[-3000:]}")
        from rows import read_rows

        (row,) = read_rows(str(out))
    top = dict(sorted(peaks.items(), key=lambda kv: -kv[1])[:8])
    result = {"side": args.side, "tile": args.tile, "tiles": row["tiles"], "objects": len(row["objects"]),
              "wall_s": round(wall, 1), "model_s": round(row["seconds"], 1),
              "peak_rss_mib": {names.get(k, k): round(v, 1) for k, v in top.items()}}  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
