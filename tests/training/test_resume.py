"""A run stopped at any step and resumed ends with the weights of one that never stopped; evaluation while
training logs the benchmark's scores and draws the curves."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from jobs.finetune import main as finetune
from training.loop import FinetuneConfig, train

BASE = {"scratch": "tiny", "train": "shapes", "batch_size": 4, "lr": 3e-3, "warmup": 2, "log_every": 1,
        "threads": 1, "pool": 2, "stages": [{"examples": 12, "max_objects": 1}, {"examples": 1}]}  # fmt: skip


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_stopping_and_resuming_gives_the_weights_of_an_unbroken_run(tmp_path):
    quiet = {"log": lambda _: None}
    train(FinetuneConfig(output=str(tmp_path / "straight"), steps=6, **BASE), **quiet)
    # First sitting: stop after 3 steps (a run killed there saved last/ at step 3), then go on.
    train(FinetuneConfig(output=str(tmp_path / "resumed"), steps=6, save_every=3, **BASE), **quiet)
    stopped = json.loads((tmp_path / "resumed" / "last" / "training.json").read_text())
    assert stopped["step"] == 3
    (tmp_path / "resumed" / "final").rename(tmp_path / "unused")  # as if the run had died after step 3
    train(FinetuneConfig(output=str(tmp_path / "resumed"), steps=6, save_every=3, **BASE), resume=True, **quiet)
    a, b = weights(tmp_path / "straight" / "final"), weights(tmp_path / "resumed" / "final")
    for key in a:
        assert (a[key] - b[key]).abs().max() <= 1e-6, key
    # The log holds each step once, the resumed ones included.
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_other_settings_before_any_work(tmp_path, capsys):
    run = tmp_path / "run"
    train(FinetuneConfig(output=str(run), steps=2, save_every=1, **BASE), log=lambda _: None)
    assert finetune(["--resume", str(run), "--lr", "0.1"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    assert finetune(["--resume", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_evaluation_while_training_logs_the_benchmark_scores_and_draws_curves(tmp_path):
    cfg = FinetuneConfig(output=str(tmp_path / "run"), steps=2, eval_every=1, eval_scenes=2, eval_max_new_tokens=8,
                         **BASE)  # fmt: skip
    train(cfg, log=lambda _: None)
    evals = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    evals = [e for e in evals if "eval" in e]
    assert [e["step"] for e in evals] == [1, 2]
    assert set(evals[0]["eval"]) >= {"detection_ap50", "segmentation_miou", "counting", "ocr_exact", "caption_exact"}
    assert all(0.0 <= v <= 1.0 for v in evals[-1]["eval"].values())
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert (tmp_path / "run" / "eval-data" / "manifest.parquet").is_file()
