"""The command lines, run as a user runs them: `python -m model`, `python -m jobs.bench`, `python -m jobs.demo`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_single_image_command_prints_the_answer_and_saves_a_drawing(checkpoint, photo_paths, tmp_path):
    folder = checkpoint("tiny")[0]
    out = tmp_path / "drawn.png"
    args = ["--checkpoint", str(folder), "--image", str(photo_paths[1]), "--max-new-tokens", "8"]
    done = run("-m", "model", *args, "--prompt", "detect cat ; dog", "--save", str(out))
    assert done.returncode == 0, done.stderr
    assert "prompt: detect cat ; dog" in done.stdout and "answer: " in done.stdout
    assert Image.open(out).size == Image.open(photo_paths[1]).size

    done = run("-m", "model", *args, "--prompt", "caption en", "--json")
    record = json.loads(done.stdout)
    assert len(record["tokens"]) == len(record["logprobs"]) == 8
    assert "".join(record["tokens"]) == record["text"] and record["objects"] == []


def test_single_image_command_reports_bad_input_without_a_traceback(checkpoint, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    done = run("-m", "model", "--checkpoint", str(checkpoint("tiny")[0]), "--image", str(broken), "--prompt", "ocr")
    assert done.returncode == 2 and "cannot decode image" in done.stderr and "Traceback" not in done.stderr
    done = run("-m", "model", "--checkpoint", str(tmp_path), "--image", str(broken), "--prompt", "ocr")
    assert done.returncode == 2 and "config.json" in done.stderr


def test_bench_times_both_implementations_and_checks_they_agree(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--size", "tiny", "--batch", "2", "3", "--new-tokens", "4", "--repeats", "1", "--json", str(out)]
    done = run("-m", "jobs.bench", *args)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert [r["batch"] for r in rows] == [2, 3]
    for r in rows:
        assert r["same_tokens"] is True
        assert r["ours_tokens_per_s"] > 0 and r["transformers_tokens_per_s"] > 0 and r["workload"] == "fixed"
    assert "speedup" in done.stdout


@pytest.mark.slow
def test_bench_mixed_workload_keeps_rows_in_flight_and_gives_the_same_answers(tmp_path):
    out = tmp_path / "mixed.json"
    done = run("-m", "jobs.bench", "--workload", "mixed", "--pairs", "6", "--batch", "3", "--repeats", "1",
               "--warmup", "0", "--json", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())
    assert row["workload"] == "mixed" and row["pairs"] == 6 and row["batch"] == 3 and row["same_tokens"] is True


@pytest.mark.ray
@pytest.mark.slow
def test_demo_labels_the_bundled_examples_scores_them_and_draws_previews(tmp_path):
    done = run("-m", "jobs.demo", "--output", str(tmp_path / "demo"))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = re.findall(r"^\s*([a-zA-Z0-9 ]+): ([0-9.]+)$", done.stdout, re.M)
    scores = {name.strip(): float(value) for name, value in lines}
    assert set(scores) >= {"detection AP50", "segmentation mIoU", "counting accuracy", "OCR exact match"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    previews = list((tmp_path / "demo" / "previews").glob("*.png"))
    assert len(previews) == 12  # 8 scenes (all their prompts drawn together) and 4 words
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert metrics["labeling"]["errors"] == 0


def test_single_image_command_lists_objects_with_scores_and_draws_them(
    checkpoint, photo_paths, tmp_path, monkeypatch, capsys
):
    """The answer's objects are printed and drawn (a fixed answer stands in for a random model's noise)."""
    from jobs.predict import main
    from model import Generation, PaliGemma

    tokens = ["<loc0100>", "<loc0200>", "<loc0500>", "<loc0700>", " cat", " ;", " <loc0010>", "<loc0020>"]
    tokens += ["<loc0030>", "<loc0040>", " dog"]
    logprobs = [-0.1] * 5 + [-3.0] + [-0.5] * 5
    answer = Generation("".join(tokens), list(range(len(tokens))), tokens, logprobs, True)
    monkeypatch.setattr(PaliGemma, "generate", lambda self, *a, **k: [answer])
    out = tmp_path / "drawn.png"
    args = ["--checkpoint", str(checkpoint("tiny")[0]), "--image", str(photo_paths[1]), "--prompt", "detect cat ; dog"]
    assert main([*args, "--save", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    cat, dog = (next(line for line in lines if line.strip().startswith(name)) for name in ("cat", "dog"))
    width, height = Image.open(photo_paths[1]).size
    # <loc0100><loc0200><loc0500><loc0700>: y0, x0, y1, x1 in 1024 bins of 1023 steps
    assert f"box [{200 / 1023 * width:.1f}, {100 / 1023 * height:.1f}, {700 / 1023 * width:.1f}" in cat
    assert "score 0.905" in cat  # exp(-0.1)
    assert "score 0.607" in dog  # exp(-0.5): the separator's token is not part of either object
    drawn, original = Image.open(out).convert("RGB"), Image.open(photo_paths[1]).convert("RGB")
    assert drawn.size == original.size and drawn.tobytes() != original.tobytes()
    assert torch.is_grad_enabled()  # the command leaves autograd on for whatever runs next in this process
