"""Every user error is one line `error: ...` on stderr with exit 2; --debug adds the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import make_regression_csv, regression_config, write_config

REPO = Path(__file__).resolve().parents[1]


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, f"expected one line, got: {err!r}"
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


def test_missing_config(cli, tmp_path):
    code, _, err = cli("train", tmp_path / "nope.toml")
    assert_one_line_error(code, err, "config file not found", "nope.toml")


def test_bad_config_names_key(cli, tmp_path):
    csv = make_regression_csv(tmp_path / "d.csv", n=20)
    cfg = write_config(tmp_path / "c.toml", regression_config(csv, **{"fit.epochs": "many"}))
    code, _, err = cli("train", cfg)
    assert_one_line_error(code, err, "c.toml", "fit.epochs")


def test_unknown_column(cli, tmp_path):
    csv = make_regression_csv(tmp_path / "d.csv", n=20)
    cfg = write_config(tmp_path / "c.toml", regression_config(csv, **{"data.targets": ["mpg"]}))
    code, _, err = cli("train", cfg, "--out", tmp_path / "r")
    assert_one_line_error(code, err, "targets", "'mpg'", "columns: f0")
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_missing_model_and_unknown_option(cli, tmp_path):
    csv = make_regression_csv(tmp_path / "d.csv", n=20)
    cfg = write_config(tmp_path / "c.toml", regression_config(csv))
    code, _, err = cli("evaluate", tmp_path / "m.keras", "--config", cfg)
    assert_one_line_error(code, err, "model file not found")
    code, _, err = cli("train", cfg, "--epochz", "3")
    assert_one_line_error(code, err, "--epochz")
    code, _, err = cli("evaluate", tmp_path / "m.weights.h5", "--config", cfg)
    assert_one_line_error(code, err)
    (tmp_path / "m.weights.h5").write_bytes(b"junk")
    code, _, err = cli("evaluate", tmp_path / "m.weights.h5", "--config", cfg)
    assert_one_line_error(code, err, "weights do not fit")


def test_debug_shows_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "mlnnkit"]
    p = subprocess.run(cmd + ["train", str(tmp_path / "x.toml")], env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"error: config file not found: {tmp_path / 'x.toml'}"
    ]
    p = subprocess.run(cmd + ["--debug", "train", str(tmp_path / "x.toml")], env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 2 and "Traceback" in p.stderr and p.stderr.rstrip().endswith("x.toml")


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["evaluate", "--help"]])
def test_help(cli, args):
    code, out, _ = cli(*args)
    assert code == 0 and "Usage" in out
