"""The decode-cost benchmark runs end to end and reports every figure docs/PERFORMANCE.md quotes (its numbers are
read there, never asserted here)."""

from __future__ import annotations

import json

from benchmarks.decode_costs import main


def test_decode_costs_reports_each_part_of_a_step(tmp_path):
    out = tmp_path / "costs.json"
    assert main(["--size", "tiny", "--batch", "2", "--context", "80", "--json", str(out)]) == 0
    costs = json.loads(out.read_text())
    for key in ("streaming_gb_per_s", "decode_matmuls_row_major_gb_per_s", "decode_matmuls_column_major_gb_per_s",
                "vision_ms", "prefill_ms", "step_ms"):  # fmt: skip
        assert costs[key] > 0, key
    assert costs["batch"] == 2 and costs["step_floor_ms"] < costs["step_ms"]
