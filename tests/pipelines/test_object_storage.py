"""The label job against object storage: an S3-compatible server (moto) on 127.0.0.1 holding photographs, a
grayscale and a corrupt file; the job reads s3:// and writes s3://, resumes there after a killed run, reads a
Parquet dataset of image bytes from the bucket, and runs on a two-node Ray cluster with its replicas placed on the
second node by a custom resource.

The server and the Ray nodes are started by the tests and ended by their process ids.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rows import PartStore
from storage import locate
from testing.ray_cluster import clean_env, cluster_env, kill_session, start_head
from testing.s3 import restore_env, set_env, start_s3

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def s3(photo_paths):
    """The server, with s3://bucket/photos/ holding 4 photographs, a grayscale PNG and a corrupt JPEG."""
    import boto3

    server = start_s3()
    before = set_env(server)
    try:
        client = boto3.client("s3")
        client.create_bucket(Bucket="bucket")
        for p in photo_paths:
            client.put_object(Bucket="bucket", Key=f"photos/{p.name}", Body=p.read_bytes())
        gray = io.BytesIO()
        Image.open(photo_paths[0].parent / "camera.png").save(gray, format="PNG")
        client.put_object(Bucket="bucket", Key="photos/sub/camera.png", Body=gray.getvalue())
        client.put_object(Bucket="bucket", Key="photos/corrupt.jpg", Body=b"\xff\xd8 not a JPEG")
        client.put_object(Bucket="bucket", Key="photos/notes.txt", Body=b"not an image file name")
        yield server
    finally:
        restore_env(before)
        server.stop()


NAMES = {"astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "corrupt.jpg"}


def job(checkpoint_dir, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jobs.label", "--checkpoint", str(checkpoint_dir), "--max-new-tokens", "4",
            "--no-progress", *extra]  # fmt: skip


def rows_at(uri: str) -> list[dict]:
    return list(PartStore(locate(uri).join("predictions")).iter_rows())


@pytest.mark.timeout(300)
def test_reads_s3_writes_s3_and_resumes_there_after_a_kill(s3, checkpoint):
    out = "s3://bucket/runs/caption"
    cmd = job(checkpoint("tiny")[0], "--images", "s3://bucket/photos", "--task", "caption", "--output", out,
              "--batch-size", "1", "--rows-per-part", "2")  # fmt: skip
    first = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(**s3.env()), start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        commits = locate(out).join("predictions", "_commits")
        deadline = time.monotonic() + 200
        while not list(commits.list()):
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        kill_session(first.pid)  # killed: nothing saved on the way out
    before = len(rows_at(out))
    again = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=clean_env(**s3.env()), capture_output=True, text=True,
                           timeout=240)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    rows = rows_at(out)
    keys = [(r["image_id"], r["prompt"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(NAMES)  # every input exactly once
    assert {r["path"].rsplit("/", 1)[-1] for r in rows} == NAMES
    assert all(r["path"].startswith("s3://bucket/photos/") for r in rows)  # rows name the objects
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert by_name["corrupt.jpg"]["error"].startswith("cannot decode image") and by_name["camera.png"]["error"] is None
    summary = json.loads(locate(out).join("summary.json").read_text())
    assert summary["skipped"] == before and summary["total_rows"] == len(NAMES)


@pytest.mark.timeout(300)
def test_a_parquet_dataset_of_image_bytes_in_the_bucket(s3, checkpoint, photo_paths):
    import boto3

    table = pa.table({
        "image": [{"bytes": p.read_bytes(), "path": p.name} for p in photo_paths[:3]],
        "prompt": ["caption en", None, "detect cat"],
    })  # fmt: skip
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    boto3.client("s3").put_object(Bucket="bucket", Key="hf/train-00000.parquet", Body=buffer.getvalue())
    out = "s3://bucket/runs/parquet"
    done = subprocess.run(job(checkpoint("tiny")[0], "--parquet", "s3://bucket/hf", "--task", "ocr", "--output", out,
                              "--export", "coco"), cwd=ROOT, env=clean_env(**s3.env()), capture_output=True,
                          text=True, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = sorted(rows_at(out), key=lambda r: r["path"])
    assert [(r["path"], r["prompt"], r["task"]) for r in rows] == [
        ("astronaut.png", "caption en", "caption"),
        ("chelsea.png", "ocr", "ocr"),  # no prompt of its own: the job's task
        ("coffee.png", "detect cat", "detect"),
    ]
    assert all(r["error"] is None and r["width"] > 0 for r in rows)
    assert locate(out).join("coco_results.json").is_file()


@pytest.mark.timeout(400)
def test_two_node_cluster_runs_replicas_where_the_resource_is(s3, checkpoint, tmp_path):
    cluster = start_head(num_cpus=1)
    try:
        worker = cluster.add_worker(num_cpus=2, resources='{"replica_node": 2}')
        cluster.wait_for_nodes(2)
        out = "s3://bucket/runs/two-node"
        nodes = tmp_path / "nodes.txt"
        argv = job(checkpoint("tiny")[0], "--images", "s3://bucket/photos", "--task", "ocr", "--output", out,
                   "--replica-resource", "replica_node=1", "--replicas", "2")[3:]  # fmt: skip
        script = (
            "import json, ray, sys\n"
            "from jobs.label import build_parser, config_from_args, run\n"
            "from testing.faults import records_node\n"
            f"args = build_parser().parse_args(json.loads({json.dumps(json.dumps(argv))}))\n"
            f"ray.init(address={cluster.address!r})\n"
            f"sys.exit(run(config_from_args(args), replica_class=records_node({str(nodes)!r}))[1])\n"
        )
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=cluster_env(**s3.env()),
                              capture_output=True, text=True, timeout=360)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        head_node = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address='{cluster.address}', logging_level='ERROR');"
             "print([n['NodeID'] for n in ray.nodes() if n['Alive'] and 'replica_node' not in n['Resources']][0])"],
            env=cluster_env(), capture_output=True, text=True, timeout=60,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        placed = set(nodes.read_text().split())
        assert placed and head_node not in placed  # every replica ran on the second node
        rows = rows_at(out)
        assert len(rows) == len(NAMES) and {r["path"].rsplit("/", 1)[-1] for r in rows} == NAMES
        assert worker.process.poll() is None
    finally:
        cluster.stop()
