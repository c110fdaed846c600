"""Shared test fixtures: tiny generated data, the real fixtures when ../shared is present."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the repository; MLNNKIT_SHARED points elsewhere (e.g. from a worktree).
SHARED = Path(os.environ.get("MLNNKIT_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures not present")
    return FIXTURES


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit_code, stdout, stderr)."""
    from mlnnkit.cli import main

    def run(*args: str):
        capsys.readouterr()  # drop what earlier steps of the test printed
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _no_float64_leak():
    """Float64 imports switch JAX to 64-bit mode process-wide: switch it back after each
    test so every test of the suite runs as it would alone."""
    yield
    import sys

    if "jax" in sys.modules and sys.modules["jax"].config.jax_enable_x64:
        from mlnnkit._precision import disable_float64

        disable_float64()
