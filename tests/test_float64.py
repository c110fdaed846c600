"""float64 is a visible, process-level choice: `mlnnkit.float64()` switches it on; no layer
constructor does; a float64 model load or import says so. Each case runs in a fresh
process, since the switch is for the whole process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_fresh(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
        env=env, timeout=300, check=False,
    )  # fmt: skip


def test_layer_constructor_does_not_switch_and_the_switch_does():
    r = run_fresh("""
        import mlnnkit, jax, keras
        from mlnnkit.layers import InputScaling
        InputScaling([0.0], [1.0], dtype="float64")
        assert not jax.config.jax_enable_x64, "a constructor switched float64 on"
        mlnnkit.float64()
        assert jax.config.jax_enable_x64
        y = keras.layers.Dense(1, dtype="float64")(keras.ops.ones((1, 2), "float64"))
        print(str(y.dtype))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "float64"


def test_loading_a_float64_model_says_so_once(tmp_path):
    r = run_fresh(f"""
        import logging, mlnnkit, keras
        mlnnkit.float64()
        m = keras.Sequential([keras.Input((2,), dtype="float64"),
                              keras.layers.Dense(1, dtype="float64")])
        m.save({str(tmp_path / "m64.keras")!r})
    """)
    assert r.returncode == 0, r.stderr
    r = run_fresh(f"""
        import jax, numpy as np, mlnnkit
        from mlnnkit.models import load_model
        m = load_model({str(tmp_path / "m64.keras")!r}, compile=False)
        m = load_model({str(tmp_path / "m64.keras")!r}, compile=False)
        assert jax.config.jax_enable_x64
        print(m.weights[0].dtype)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "float64"
    assert r.stderr.count("m64.keras is a float64 model: JAX's 64-bit mode is now on") == 1
