"""benchmarks/chain_speed.py on a few blocks, small but real: the OC-SMART chain (the real
PACE aaNN as scope, generated rrsNN and IOP networks) against its float64 NumPy way, both
ways writing into reused block buffers and mlnnkit also into new arrays. The rates it
prints are not checked here (benchmarks are timed, tests are not); what is checked is that
it runs and that both ways give the same numbers and decisions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import FIXTURES, REPO


@pytest.mark.slow
def test_chain_benchmark_both_ways_agree_on_blocks_and_a_short_last_block(tmp_path):
    if not (FIXTURES / "ocsmart" / "PACE_Lrc_aaNN.H5").is_file():
        pytest.skip("../shared/fixtures/ocsmart/PACE_Lrc_aaNN.H5 not present")
    out = tmp_path / "chain.json"
    p = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "chain_speed.py"),
         "--rows", "25000", "--block", "10000", "--json", str(out)],
        check=False, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "MLNNKIT_SHARED": str(FIXTURES.parent)},
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(out.read_text())
    assert res["rows"] == 25000 and len(res["block_ratios"]) == 3  # 10,000 + 10,000 + 5,000
    assert res["max_rel_diff_outputs"] < 1e-5
    assert res["out_of_scope_agreement"] > 0.999
    assert res["max_abs_diff_scope_error"] < 1e-3
    counts = res["flag_counts"]
    assert 0 < counts["out_of_scope"] < 25000 and 0 < counts["input_out_of_range"] < 25000
    assert res["mlnnkit_rows_per_s"] > 0 and res["mlnnkit_new_arrays_rows_per_s"] > 0
