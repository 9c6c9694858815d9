"""Every entry point answers a bad argument, file or folder with one line naming what is wrong, and exit status 2,
before any heavy work (no Ray, no weights read): a table of cases, each with the reason it is here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from testing.ray_cluster import clean_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(checkpoint, photo_paths, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("validation")
    good = checkpoint("tiny")[0]
    truncated = root / "truncated"
    shutil.copytree(good, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) * 2 // 3])  # a copy cut short
    Image.new("1", (14000, 14000)).save(root / "bomb.png")  # 196 Mpx: past Pillow's own error limit
    Image.new("1", (12000, 12000)).save(root / "big.png")  # 144 Mpx: Pillow only warns; our limit refuses
    (root / "a-file").write_text("not a folder")
    images = root / "images"
    images.mkdir()
    shutil.copy(photo_paths[0], images / photo_paths[0].name)
    (root / "empty").mkdir()
    return {"ckpt": str(good), "truncated": str(truncated), "bomb": str(root / "bomb.png"),
            "big": str(root / "big.png"),
            "file": str(root / "a-file"), "images": str(images), "photo": str(photo_paths[0]), "root": str(root),
            "empty": str(root / "empty")}  # fmt: skip


LABEL = ["-m", "jobs.label", "--checkpoint", "{ckpt}", "--images", "{images}", "--output", "{root}/out"]
MODEL = ["-m", "model", "--checkpoint", "{ckpt}", "--image", "{photo}", "--prompt", "caption en"]

CASES = [
    # (arguments, what the one line must say). The cases of the issue first:
    ([*LABEL, "--task", "ocr", "--output", "{file}"], "is a file"),  # an --output that is a file
    ([*LABEL[:3], "{truncated}", *LABEL[4:], "--task", "ocr"], "truncated"),  # a cut-short model.safetensors
    ([*LABEL, "--task", "ocr", "--max-pixels", "0"], "--max-pixels"),  # was silently replaced by the default
    ([*MODEL[:5], "{bomb}", *MODEL[6:]], "pixels"),  # a decompression bomb: was a Pillow traceback
    ([*MODEL[:5], "{big}", *MODEL[6:]], "more than the limit"),  # 144 Mpx: the one pixel limit of every entry point
    ([*MODEL, "--save", "{root}/missing/out.png"], "does not exist"),  # --save into a missing folder
    # Ten more:
    ([*LABEL, "--task", "ocr", "--batch-size", "0"], "--batch-size"),  # a batch of nothing
    ([*LABEL, "--task", "detect"], "classes"),  # detect needs classes (no COCO categories to borrow)
    ([*LABEL[:5], "{root}/nowhere", *LABEL[6:], "--task", "ocr"], "not a folder"),  # a missing image folder
    ([*LABEL[:3], "{empty}", *LABEL[4:], "--task", "ocr"], "config.json"),  # a folder that is no checkpoint
    ([*LABEL, "--task", "detect", "--classes", "cat", "--nms", "1.5"], "--nms"),  # an IoU above 1
    ([*LABEL, "--task", "detect", "--classes", "cat", "--class-thresholds", "cat:0.4"], "NAME=SCORE"),  # bad syntax
    ([*LABEL, "--task", "ocr", "--retry-errors"], "needs --resume"),  # retrying needs a run to go on from
    ([*LABEL, "--task", "ocr", "--export", "tiff"], "unknown format"),  # an export format we do not write
    ([*LABEL, "--task", "ocr", "--vae", "{root}/none.npz"], "--vae"),  # a mask decoder that is not there
    ([*LABEL, "--task", "ocr", "--replica-resource", "=2"], "NAME=AMOUNT"),  # a resource without a name
    (["-m", "jobs.export", "--predictions", "{empty}", "--format", "yolo", "--output", "{root}/x"], "committed"),
    (["-m", "jobs.benchmark", "--checkpoint", "{ckpt}", "--coco", "{file}", "--output", "{root}/b"], "--images"),
    (["-m", "evals", "--gt", "{root}/gt.json", "--pred", "{root}"], "--gt"),  # ground truth that is not there
    ([*MODEL, "--top-p", "0"], "--top-p"),  # an empty nucleus
    (["-m", "ui", "--checkpoint", "{truncated}"], "truncated"),  # the web page checks its checkpoint too
    (["-m", "jobs.finetune", "--scratch", "shapes", "--train", "{file}", "--output", "{root}/ft"], ".jsonl"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "says"), CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_a_bad_argument_gets_one_line_and_exit_status_2(files, args, says):
    argv = [a.format(**files) for a in args]
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
