"""The review loop through a real Label Studio server: our export imported as it is, predictions turned into
annotations with edits (an object deleted, a box moved, one added, a brush mask drawn, a task skipped), the JSON
export fetched through the API, and `make_records --labelstudio` giving exactly the edited objects.

Needs the server in its own venv: `bash .ci/install-labelstudio` (.venv-labelstudio/, or LABEL_STUDIO_BIN). The
test fails without it rather than skipping: a green run must mean the round trip was made. The server runs on
127.0.0.1 only, in its own process session, and is ended by its process group id when the test is done.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decoders import parse_objects
from jobs.export import main as export
from jobs.make_records import main as make_records
from records import Problems
from records.labelstudio import labelstudio_items
from rows import PartStore, rows_to_table

from .helpers import ROOT, one_bin, read_jsonl, scene_rows

TOKEN = "c0ffee" * 6 + "beef"
BIN = Path(os.environ.get("LABEL_STUDIO_BIN", ROOT / ".venv-labelstudio" / "bin" / "label-studio"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """Label Studio on 127.0.0.1 with a user whose API token is TOKEN (the env vars Label Studio 1.23 reads)."""

    def __init__(self, data: Path, document_root: Path):
        if not BIN.is_file():
            pytest.fail(f"{BIN} is missing: run `bash .ci/install-labelstudio` first")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = os.environ | {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data), "LABEL_STUDIO_USERNAME": "test@example.com",
            "LABEL_STUDIO_PASSWORD": "test-password-1", "LABEL_STUDIO_USER_TOKEN": TOKEN,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root), "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false", "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        }  # fmt: skip
        self.log = (data / "server.log").open("w")
        self.process = subprocess.Popen(
            [str(BIN), "start", "--internal-host", "127.0.0.1", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-browser"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def wait(self, seconds: float = 240) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"label-studio exited with {self.process.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(2)
        pytest.fail(f"label-studio did not answer /health in {seconds} s; see {self.log.name}")

    def api(self, method: str, path: str, body=None):
        request = urllib.request.Request(
            self.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=120) as r:
            text = r.read().decode()
        return json.loads(text) if text else None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the session this test started, by its id
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.log.close()


def _label_run(folder: Path, images: Path) -> list[dict]:
    """A label run's output folder (what jobs.label writes) with five scenes' objects as predictions."""
    rows, _ = scene_rows(images, seed=21, count=5, score=0.8, model="shapes", num_objects=2)
    store = PartStore(folder / "predictions")
    store.prepare()
    store.write(rows_to_table(rows))
    return rows


def _rect(x, y, w, h, label, rid):
    return {"id": rid, "type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": 224,
            "original_height": 224, "image_rotation": 0,
            "value": {"x": 100 * x / 224, "y": 100 * y / 224, "width": 100 * w / 224, "height": 100 * h / 224,
                      "rotation": 0, "rectanglelabels": [label]}}  # fmt: skip


def _edits(tasks: list[dict]) -> tuple[dict[int, list], dict[int, list]]:
    """Annotation results per task (by image_id), and the objects (label, box) each should give."""
    from label_studio_sdk.converter.brush import mask2rle

    results, expected = {}, {}
    for t in tasks:
        image_id = t["data"]["image_id"]
        result = copy.deepcopy(t["predictions"][0]["result"])
        boxes = [r for r in result if r["type"] == "rectanglelabels"]

        def box_of(r):
            v = r["value"]
            return [v["x"] * 2.24, v["y"] * 2.24, (v["x"] + v["width"]) * 2.24, (v["y"] + v["height"]) * 2.24]

        if image_id == 1:  # delete the first object (its rectangle and its brush)
            gone = boxes[0]["id"]
            result = [r for r in result if not r["id"].startswith(gone)]
        elif image_id == 2:  # move the first box 10 px right and 5 px down
            boxes[0]["value"]["x"] += 100 * 10 / 224
            boxes[0]["value"]["y"] += 100 * 5 / 224
        elif image_id == 3:  # add a box the model missed
            result.append(_rect(150, 150, 40, 30, "square", "added"))
        elif image_id == 4:  # draw a brush mask of a new object, no rectangle
            blob = np.zeros((224, 224), np.uint8)
            blob[10:40, 180:215] = 255
            result.append({"id": "painted", "type": "brushlabels", "from_name": "mask", "to_name": "image",
                           "original_width": 224, "original_height": 224, "image_rotation": 0,
                           "value": {"format": "rle", "rle": [int(v) for v in mask2rle(blob)],
                                     "brushlabels": ["circle"]}})  # fmt: skip
        results[image_id] = result
        if image_id == 5:
            continue  # skipped by the reviewer
        kept = [r for r in result if r["type"] == "rectanglelabels"]
        expected[image_id] = sorted((r["value"]["rectanglelabels"][0], box_of(r)) for r in kept)
        if image_id == 4:
            expected[image_id] = sorted([*expected[image_id], ("circle", [180.0, 10.0, 215.0, 40.0])])
    return results, expected


@pytest.mark.slow
def test_a_review_in_label_studio_comes_back_as_exactly_the_edited_objects(tmp_path):
    root = tmp_path / "root"
    (root / "photos").mkdir(parents=True)
    _label_run(tmp_path / "run", root / "photos")
    assert export(["--predictions", str(tmp_path / "run"), "--format", "labelstudio", "--output",
                   str(tmp_path / "ls"), "--document-root", str(root)]) == 0  # fmt: skip
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    config = (tmp_path / "ls" / "label_config.xml").read_text()
    (tmp_path / "data").mkdir()
    server = Server(tmp_path / "data", root)
    try:
        server.wait()
        project = server.api("POST", "/api/projects", {"title": "review", "label_config": config})
        server.api("POST", "/api/storages/localfiles", {"project": project["id"], "path": str(root / "photos"),
                                                         "title": "photos", "use_blob_urls": False})  # fmt: skip
        server.api("POST", f"/api/projects/{project['id']}/import", tasks)
        listed = server.api("GET", f"/api/tasks?project={project['id']}&page_size=100")
        listed = listed["tasks"] if isinstance(listed, dict) else listed
        assert len(listed) == 5
        results, expected = _edits(tasks)
        for task in listed:
            image_id = task["data"]["image_id"]
            server.api("POST", f"/api/tasks/{task['id']}/annotations",
                       {"result": results[image_id], "was_cancelled": image_id == 5})  # fmt: skip
        exported = server.api("GET", f"/api/projects/{project['id']}/export?exportType=JSON")
        # Label Studio serves the images it was given, from the document root.
        with urllib.request.urlopen(
            urllib.request.Request(
                server.url + exported[0]["data"]["image"], headers={"Authorization": f"Token {TOKEN}"}
            )
        ) as r:
            assert r.status == 200 and r.read()[:4] == b"\x89PNG"  # fmt: skip
    finally:
        server.stop()
    (tmp_path / "export.json").write_text(json.dumps(exported))
    assert all(t["predictions"] for t in exported)  # the predictions are still there, and ignored
    out = tmp_path / "reviewed.jsonl"
    assert make_records(["--labelstudio", str(tmp_path / "export.json"), "--document-root", str(root), "--task",
                         "detect", "--classes", "circle ; square ; triangle", "--output", str(out)]) == 0  # fmt: skip
    records = {int(r["image"].rsplit("scene", 1)[1].split(".")[0]) + 1: r for r in read_jsonl(out)}
    assert set(records) == set(expected) == {1, 2, 3, 4}  # the skipped task gives nothing
    for image_id, want in expected.items():
        got = sorted((o.label, list(o.box)) for o in parse_objects(records[image_id]["suffix"], 224, 224))
        assert [g[0] for g in got] == [w[0] for w in want], image_id
        for (_, g), (_, w) in zip(got, want, strict=True):
            assert np.all(np.abs(np.array(g) - w) <= one_bin(224, 224) / 2 + 1e-6), (image_id, g, w)
    # The painted mask comes back pixel for pixel through label-studio-sdk's brush decoder.
    items = {it.image_id: it for it in labelstudio_items(tmp_path / "export.json", str(root), Problems())}
    painted = next(o for o in items[4].objects if o.box == (180.0, 10.0, 215.0, 40.0))
    want = np.zeros((224, 224), bool)
    want[10:40, 180:215] = True
    assert np.array_equal(painted.mask, want)
    assert Image.open(items[4].image).size == (224, 224)
