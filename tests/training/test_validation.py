"""Validation while training on the user's records: a real run from the bundled model whose score moves, best/
holding the best evaluation's weights, patience, and a schedule chosen to fit --max-minutes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from jobs.make_records import main as make_records
from model import PaliGemma
from training.loop import FinetuneConfig, train
from training.shapes_dataset import write_benchmark_set
from training.validate import evaluate_val, load_val_set

from .test_finetune import _dataset

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ROOT / "checkpoints" / "paligemma-shapes"


@pytest.fixture(scope="module")
def shapes_records(tmp_path_factory):
    folder = tmp_path_factory.mktemp("val")
    write_benchmark_set(folder, 24, 0, seed=11)
    out = folder / "train.jsonl"
    assert make_records(["--coco", str(folder / "annotations.json"), "--val-share", "0.25", "--output", str(out)]) == 0
    return out, folder / "train.val.jsonl"


def _evals(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [e for e in lines if "eval" in e]


@pytest.mark.slow
def test_best_holds_the_weights_of_the_best_evaluation_and_patience_stops(shapes_records, tmp_path):
    train_file, val_file = shapes_records
    run = tmp_path / "run"
    # A high learning rate from the trained model: the validation score moves from one evaluation to the next.
    cfg = FinetuneConfig(output=str(run), model=str(SHAPES), train=str(train_file), val=str(val_file), steps=12,
                         batch_size=8, lr=3e-3, warmup=1, eval_every=2, patience=2, log_every=2, threads=1,
                         eval_max_new_tokens=48)  # fmt: skip
    train(cfg, log=lambda _: None)
    evals = _evals(run)
    values = [e["eval"]["detect_ap50"] for e in evals]
    assert evals[0]["step"] == 0 and len(set(values)) >= 2, values  # the starting point, and a score that moved
    best_i = max(range(len(values)), key=lambda i: (values[i], -i))  # the first of the best
    saved = json.loads((run / "best" / "training.json").read_text())
    assert saved["step"] == evals[best_i]["step"] and saved["best_metric"] == "detect_ap50"
    # Patience 2: the run ends at the second evaluation in a row without a better score (or at its last step).
    stale, stop = 0, len(values) - 1
    for i in range(1, len(values)):
        stale = 0 if values[i] > max(values[:i]) else stale + 1
        if stale == 2:
            stop = i
            break
    assert len(values) == stop + 1
    # The weights in best/ score exactly what the log says they scored.
    model = PaliGemma.from_pretrained(run / "best")
    rescored = evaluate_val(model, load_val_set(val_file), max_new_tokens=48)
    assert rescored["detect_ap50"] == pytest.approx(values[best_i], abs=1e-12)


def test_max_minutes_without_steps_picks_a_schedule_that_fits(checkpoint, tmp_path):
    folder = checkpoint("tiny")[0]
    data = _dataset(tmp_path / "d")
    run = tmp_path / "run"
    cfg = FinetuneConfig(output=str(run), model=str(folder), train=str(data), val=str(data), max_minutes=0.25,
                         batch_size=4, warmup=10, eval_every=10, log_every=5, threads=1,
                         eval_max_new_tokens=8)  # fmt: skip
    assert cfg.steps is None
    started = time.perf_counter()
    train(cfg, log=lambda _: None)
    seconds = time.perf_counter() - started
    steps = json.loads((run / "training_config.json").read_text())["steps"]
    assert steps >= 5 and (run / "final").is_dir()
    trained = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert max(r.get("minutes", 0) for r in trained) <= 0.25 + 0.05  # training ended within the budget
    assert seconds < 0.25 * 60 * 3  # and the run with it (start-up, evaluations and saves included)
    # It ran (nearly) the whole schedule: step times measured on a shared machine move, so allow some.
    assert json.loads((run / "final" / "training.json").read_text())["step"] >= 0.6 * steps


def test_validation_scores_text_tasks_and_refuses_an_unknown_best_metric(checkpoint, tmp_path):
    folder = checkpoint("tiny")[0]
    data = _dataset(tmp_path / "d", 4)
    model = PaliGemma.from_pretrained(folder)
    scores = evaluate_val(model, load_val_set(data), max_new_tokens=6)
    assert set(scores) == {"caption_cider", "caption_exact"} and 0 <= scores["caption_exact"] <= 1
    cfg = FinetuneConfig(output=str(tmp_path / "r"), model=str(folder), train=str(data), val=str(data), steps=1,
                         eval_every=1, best_metric="detect_ap50", batch_size=2, threads=1,
                         eval_max_new_tokens=4)  # fmt: skip
    from specs.fields import SpecError

    with pytest.raises(SpecError, match="--best-metric detect_ap50: the validation set has no such score"):
        train(cfg, log=lambda _: None)


def test_a_coco_file_is_a_validation_set_too(tmp_path):
    write_benchmark_set(tmp_path, 4, 0, seed=12)
    vset = load_val_set(tmp_path / "annotations.json", vae=str(SHAPES / "vae.npz"))
    assert {r.prefix for r in vset.records} == {"detect circle ; square ; triangle",
                                                "segment circle ; square ; triangle"}  # fmt: skip
    assert vset.default_metric() == "segment_ap50"
    from decoders import MaskDecoder

    model = PaliGemma.from_pretrained(SHAPES)
    scores = evaluate_val(model, vset, MaskDecoder.from_npz(SHAPES / "vae.npz"), max_new_tokens=48)
    assert set(scores) == {"detect_ap50", "detect_ap", "segment_ap50", "segment_ap"}
    assert scores["detect_ap50"] > 0.2  # the bundled model finds shapes: the set and its ground truth line up
