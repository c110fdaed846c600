"""Shared test fixtures: tiny generated data, the real fixtures when ../shared is present.

Float64: tests that need it switch it on explicitly (``mlnnkit.float64()``, or an import
or load of a float64 model, which says so) or run in a subprocess; nothing undoes it.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import signal
import tempfile

import numpy as np
import pytest

# A pytest started in the background by a non-interactive shell (`pytest &` in a script)
# ignores SIGINT, and a child inherits an ignored signal (Python then leaves it ignored):
# the Ctrl-C tests could not interrupt their commands. Children of a process with a
# handler get the default disposition back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The compile cache of the test run lives in a temporary folder, not in the user's home
# (tests that check the cache point MLNNKIT_CACHE_DIR at their own folder).
os.environ["MLNNKIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="mlnnkit-test-cache-")

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
