"""The acceptance case of `mlnnkit predict` on a scene, small but real: a 7-100-1 network on
seven NetCDF variables with 10% NaN pixels, in a child process whose peak memory is
measured. benchmarks/predict_memory.py runs the full 2,030 x 1,354 granule."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_scene_output_shape_nan_mask_and_peak_memory(tmp_path):
    out = tmp_path / "mem.json"
    p = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "predict_memory.py"),
         "--lines", "406", "--pixels", "271", "--json", str(out), "--no-baseline"],
        check=False, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(out.read_text())
    assert res["output_shape_ok"] and res["nan_exactly_where_input_nan"]
    assert 0.08 * res["rows"] < res["nan_pixels"] < 0.12 * res["rows"]
    assert res["max_error_rel_range_sample"] <= 1e-5
    assert 100 < res["peak_rss_mb"] < 1000
