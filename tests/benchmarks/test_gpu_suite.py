"""`python -m benchmarks.gpu --smoke`: the GPU suite's code, on tiny configs on the CPU, so it never rots before a
GPU runs it. Its numbers are read in docs/PERFORMANCE.md, never asserted; what is asserted is that every part ran,
that parity holds where it must, and that nothing imported Ray (the GPU machines have none)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_gpu_suite_runs_on_tiny_configs_without_ray(tmp_path):
    code = (
        "import sys; from benchmarks.gpu import main; "
        f"assert main(['--smoke', '--out', {str(tmp_path)!r}]) == 0; "
        "assert 'ray' not in sys.modules, 'the GPU suite imported Ray'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert [r["size"] for r in results["parity"]] == ["tiny", "tiny2"]
    for row in results["parity"]:
        assert row["logits_relative_difference"] < 0.03  # bfloat16 on both sides, same weights
        assert row["rows_with_same_tokens"] >= row["rows"] // 2
    engines = {(r["size"], r["engine"]) for r in results["speed"]}
    assert engines == {("tiny", "ours eager"), ("tiny", "ours compiled"), ("tiny", "transformers"),
                       ("tiny2", "ours eager"), ("tiny2", "transformers")}  # fmt: skip
    assert all(r["images_per_s"] > 0 and r["step_floor_ms"] > 0 for r in results["speed"])
    assert [r["engine"] for r in results["prefill"]] == ["ours", "transformers"]
    labeling = results["labeling"]
    assert labeling["objects"] == labeling["masks"] == 4 * labeling["images"]  # every object's mask decoded
    markdown = (tmp_path / "gpu.md").read_text()
    assert "| tiny2 | 112 | ours eager | 2 |" in markdown and results["device"] in markdown
