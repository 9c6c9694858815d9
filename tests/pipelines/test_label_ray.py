"""The labeling pipeline on a real local Ray (2 CPUs), a tiny random checkpoint and scikit-image photographs.

One Ray instance serves the whole module; every test has a timeout so that a scheduling deadlock fails instead of
hanging. `jobs.label.main` runs in-process and joins that instance.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs.label import build_parser, config_from_args, main, run
from testing.faults import crash_once, dies_on

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

GOOD = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "sub/camera.png", "rgba.png", "gray16.png")
BAD = ("corrupt.jpg", "truncated.jpg")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def image_folder(photo_paths, tmp_path_factory) -> Path:
    """Photographs plus a grayscale, an RGBA, a 16-bit, a corrupt and a truncated file."""
    folder = tmp_path_factory.mktemp("images")
    (folder / "sub").mkdir()
    data = photo_paths[0].parent
    for p in photo_paths:
        shutil.copy(p, folder / p.name)
    shutil.copy(data / "camera.png", folder / "sub" / "camera.png")  # grayscale
    rgba = np.array(Image.open(data / "coffee.png").convert("RGBA"))
    rgba[:, :100, 3] = 0
    Image.fromarray(rgba).save(folder / "rgba.png")
    Image.fromarray(np.asarray(Image.open(data / "camera.png"), dtype=np.uint16) * 257).save(folder / "gray16.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    jpeg = (data / "rocket.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    return folder


def label(checkpoint_dir, out, *extra: str, replica_class=None) -> int:
    args = ["--checkpoint", str(checkpoint_dir), "--output", str(out), "--max-new-tokens", "6", "--no-progress"]
    if replica_class is None:
        return main([*args, *extra])
    return run(config_from_args(build_parser().parse_args([*args, *extra])), replica_class=replica_class)[1]


def read_rows(out: Path) -> list[dict]:
    from rows import read_rows as committed_rows

    return committed_rows(out)


@pytest.mark.timeout(120)
def test_folder_with_bad_files_gives_one_row_per_input(checkpoint, image_folder, tmp_path, photos, capsys):
    from model import PaliGemma

    folder = checkpoint("tiny")[0]
    out = tmp_path / "out"
    task = ["--task", "detect", "--classes", "cat ; dog"]
    assert label(folder, out, "--images", str(image_folder), *task, "--replicas", "2", "--batch-size", "2") == 0
    rows = read_rows(out)
    by_name = {Path(r["path"]).relative_to(image_folder).as_posix(): r for r in rows}
    assert sorted(by_name) == sorted(GOOD + BAD) and len(rows) == len(GOOD + BAD)
    assert all(by_name[n]["error"] for n in BAD) and not any(by_name[n]["error"] for n in GOOD)
    assert by_name["gray16.png"]["width"] == 512 and by_name["rgba.png"]["height"] == 400
    # The pipeline's answers are what generate gives for the same image and prompt.
    model = PaliGemma.from_pretrained(folder)
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
    expected = model.generate(photos, ["detect cat ; dog"] * 4, max_new_tokens=6)
    assert [by_name[n]["text"] for n in names] == expected
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 9 and summary["errors"] == 2 and summary["duplicates_dropped"] == 0
    assert "labeled 9 inputs, 2 errors" in capsys.readouterr().out
    categories = json.loads((out / "coco_dataset.json").read_text())["categories"]
    assert [(c["id"], c["name"]) for c in categories] == [(1, "cat"), (2, "dog")]


@pytest.mark.timeout(150)
def test_a_replica_that_crashes_once_still_gives_every_input_exactly_once(checkpoint, image_folder, tmp_path):
    marker = tmp_path / "crashed"
    out = tmp_path / "out"
    args = ["--images", str(image_folder), "--task", "caption", "--replicas", "2", "--batch-size", "2"]
    assert label(checkpoint("tiny")[0], out, *args, replica_class=crash_once(marker)) == 0
    assert marker.is_file()  # a replica really died
    rows = read_rows(out)
    keys = [(r["image_id"], r["prompt"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(GOOD + BAD)
    assert sum(1 for r in rows if r["error"]) == len(BAD)


@pytest.mark.timeout(240)
def test_an_input_that_kills_its_replica_every_time_is_set_aside_and_the_rest_labeled(
    checkpoint, image_folder, tmp_path, capsys
):
    out = tmp_path / "out"
    args = ["--images", str(image_folder), "--task", "caption", "--batch-size", "4", "--retries", "1"]
    assert label(checkpoint("tiny")[0], out, *args, replica_class=dies_on("chelsea.png")) == 0
    rows = read_rows(out)
    keys = [(r["image_id"], r["prompt"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(GOOD + BAD)  # every input exactly once, the poison included
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["chelsea.png"]["error"].startswith("replica died on this input")
    assert all(by_name[Path(n).name]["error"] is None for n in GOOD if n != "chelsea.png")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["isolated"] == 1
    assert "set aside" in capsys.readouterr().out + capsys.readouterr().err or summary["isolated"] == 1


@pytest.mark.timeout(120)
def test_segment_on_a_coco_set_writes_masks_and_coco_files(checkpoint, photo_paths, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from testing.vae import write_random_vae_npz

    vae = write_random_vae_npz(tmp_path / "vae.npz", codebook_dim=8)
    images = [{"id": 100 + i, "file_name": p.name, "width": 1, "height": 1} for i, p in enumerate(photo_paths)]
    categories = [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}]
    gt = {"images": images, "annotations": [], "categories": categories}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    out = tmp_path / "out"
    # No --classes: a COCO source asks for its own categories and keeps their ids.
    args = ["--coco", str(tmp_path / "gt.json"), "--images", str(photo_paths[0].parent), "--task", "segment"]
    assert label(checkpoint("tiny")[0], out, *args, "--vae", vae, "--max-new-tokens", "24", "--previews", "2") == 0
    rows = read_rows(out)
    assert sorted(r["image_id"] for r in rows) == [100, 101, 102, 103]
    assert {r["prompt"] for r in rows} == {"segment cat ; dog"}
    dataset = json.loads((out / "coco_dataset.json").read_text())
    assert [(c["id"], c["name"]) for c in dataset["categories"]] == [(5, "cat"), (9, "dog")]
    coco = COCO(str(out / "coco_dataset.json"))
    results = json.loads((out / "coco_results.json").read_text())
    if results:
        ev = COCOeval(coco, coco.loadRes(str(out / "coco_results.json")), "bbox")
        ev.evaluate()
    assert len(list((out / "previews").glob("*.png"))) == 2


@pytest.mark.timeout(120)
def test_manifest_rows_carry_their_own_prompts_and_the_transformers_backend_runs(checkpoint, photo_paths, tmp_path):
    import pandas as pd

    manifest = tmp_path / "m.csv"
    paths = [str(p) for p in photo_paths[:2]]
    pd.DataFrame({"path": paths * 2, "prompt": ["caption en", "caption en", "detect cat", "ocr"]}).to_csv(manifest)
    out = tmp_path / "out"
    assert label(checkpoint("tiny")[0], out, "--manifest", str(manifest), "--backend", "transformers") == 0
    rows = read_rows(out)
    assert sorted((r["path"], r["task"]) for r in rows) == sorted(
        [(paths[0], "caption"), (paths[1], "caption"), (paths[0], "detect"), (paths[1], "ocr")]
    )
    assert (out / "coco_results.json").is_file()  # the detect rows give COCO files


@pytest.mark.timeout(120)
def test_exit_status_rules(checkpoint, tmp_path, capsys):
    folder = checkpoint("tiny")[0]
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.jpg").write_bytes(b"not an image")
    assert label(folder, tmp_path / "o1", "--images", str(bad), "--task", "ocr") == 1  # every input failed
    assert "every input failed" in capsys.readouterr().err
    # Configuration errors exit 2 with one line, before any work starts.
    assert label(folder, tmp_path / "o2", "--images", str(tmp_path / "missing"), "--task", "ocr") == 2
    assert label(tmp_path, tmp_path / "o3", "--images", str(bad), "--task", "ocr") == 2  # no checkpoint there
    assert label(folder, tmp_path / "o4", "--images", str(bad), "--task", "detect") == 2  # detect needs classes
    assert label(folder, tmp_path / "o1", "--images", str(bad), "--task", "ocr") == 2  # results there, no --resume
    err = capsys.readouterr().err
    assert "not a folder" in err and "config.json" in err and "pass --resume" in err and "Traceback" not in err


@pytest.mark.timeout(120)
def test_benchmark_labels_a_coco_set_and_writes_metrics(checkpoint, photo_paths, tmp_path):
    pytest.importorskip("evals.coco")
    from jobs.benchmark import main as benchmark

    images = [{"id": i + 1, "file_name": p.name, "width": 0, "height": 0} for i, p in enumerate(photo_paths)]
    for image, photo in zip(images, photo_paths, strict=True):
        image["width"], image["height"] = Image.open(photo).size
    annotations = [
        {"id": 1, "image_id": 2, "category_id": 17, "bbox": [100, 20, 250, 250], "area": 62500, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [150, 0, 200, 500], "area": 100000, "iscrowd": 0},
    ]
    categories = [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    out = tmp_path / "bench"
    args = ["--checkpoint", str(checkpoint("tiny")[0]), "--coco", str(gt), "--images", str(photo_paths[0].parent)]
    args += ["--output", str(out), "--max-new-tokens", "8", "--limit", "3", "--no-progress"]
    assert benchmark(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["bbox"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs"}
    assert metrics["bbox"]["num_images"] == 3 and metrics["labeling"]["rows"] == 3
    assert {r["prompt"] for r in read_rows(out)} == {"detect person ; cat"}


@pytest.mark.timeout(120)
def test_per_class_asks_one_class_per_prompt_and_previews_draw_them_together(checkpoint, photo_paths, tmp_path):
    from testing.vae import write_random_vae_npz

    vae = write_random_vae_npz(tmp_path / "vae.npz", codebook_dim=8)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in photo_paths[:2]:
        shutil.copy(p, folder / p.name)
    out = tmp_path / "out"
    args = ["--images", str(folder), "--task", "segment", "--classes", "cat ; dog", "--per-class", "--vae", vae]
    assert label(checkpoint("tiny")[0], out, *args, "--previews", "5") == 0
    rows = read_rows(out)
    assert sorted((Path(r["path"]).name, r["prompt"]) for r in rows) == sorted(
        (p.name, f"segment {c}") for p in photo_paths[:2] for c in ("cat", "dog")
    )
    assert len(list((out / "previews").glob("*.png"))) == 2  # one picture per image, not per prompt
    assert label(checkpoint("tiny")[0], tmp_path / "o2", "--images", str(folder), "--task", "ocr", "--per-class") == 2


@pytest.mark.timeout(240)
def test_shapes_benchmark_labels_every_prompt_of_a_held_out_set_and_scores_it(tmp_path):
    from jobs.benchmark import main as benchmark

    ckpt = Path(__file__).resolve().parents[2] / "checkpoints" / "paligemma-shapes"
    out = tmp_path / "bench"
    args = ["--checkpoint", str(ckpt), "--shapes", "3", "--shapes-seed", "5", "--vae", str(ckpt / "vae.npz")]
    assert (
        benchmark([*args, "--max-new-tokens", "100", "--batch-size", "16", "--output", str(out), "--no-progress"]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    manifest = pq.read_table(out / "shapes-data" / "manifest.parquet").to_pylist()
    assert metrics["labeling"]["rows"] == len(manifest) and metrics["scores"]["errors"] == 0
    assert set(metrics["headline"]) == {
        "detection AP50", "segmentation mIoU", "counting accuracy", "OCR exact match", "caption exact match"
    }  # fmt: skip
    assert metrics["scores"]["ocr"]["total"] == 3 and metrics["scores"]["caption"]["total"] == 3
    assert all(0.0 <= v <= 1.0 for v in metrics["headline"].values())
    assert metrics["scores"]["detection"]["num_images"] == 3


@pytest.mark.timeout(240)
def test_retry_errors_labels_failed_rows_again_and_keeps_one_row_per_input(checkpoint, photo_paths, tmp_path):
    import pandas as pd

    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(photo_paths[0], folder / "here.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    pd.DataFrame({"path": ["here.png", "later.png", "corrupt.jpg"]}).to_csv(folder / "m.csv", index=False)
    out = tmp_path / "out"
    args = ["--manifest", str(folder / "m.csv"), "--task", "caption"]
    assert label(checkpoint("tiny")[0], out, *args) == 0
    before = {Path(r["path"]).name: r for r in read_rows(out)}
    assert before["later.png"]["error"].startswith("cannot read file")  # not there yet: a read error
    assert before["corrupt.jpg"]["error"].startswith("cannot decode image")
    shutil.copy(photo_paths[1], folder / "later.png")  # the file that was missing for a moment
    assert label(checkpoint("tiny")[0], out, *args, "--resume") == 0  # plain --resume: errors stay errors
    assert read_rows(out)[0]["image_id"] in {r["image_id"] for r in before.values()}
    assert sum(r["error"] is not None for r in read_rows(out)) == 2
    assert label(checkpoint("tiny")[0], out, *args, "--resume", "--retry-errors") == 0
    after = {Path(r["path"]).name: r for r in read_rows(out)}
    assert len(read_rows(out)) == 3  # still one row per input
    assert after["later.png"]["error"] is None and after["later.png"]["text"]
    assert after["corrupt.jpg"]["error"].startswith("cannot decode image")  # not retried by default
    assert after["here.png"]["text"] == before["here.png"]["text"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["retried_errors"] == 1 and summary["rows"] == 1
