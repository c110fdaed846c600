"""`mlnnkit train` end to end on tiny generated data: run directory, determinism, callbacks,
saved formats, and the resume-after-kill path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from mlnnkit.config import parse_config
from mlnnkit.models import load_model
from mlnnkit.train import run
from tests.helpers import make_regression_csv, regression_config, write_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def csv(tmp_path):
    return make_regression_csv(tmp_path / "d.csv", n=300, n_features=3)


def test_run_directory(tmp_path, csv, cli):
    cfg = write_config(tmp_path / "c.toml", regression_config(csv, **{"fit.epochs": 4}))
    code, out, err = cli("train", cfg, "--out", tmp_path / "run")
    assert code == 0, err
    run_dir = tmp_path / "run"
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.toml", "model.keras", "model.h5", "history.csv", "history.png", "metrics.json"} <= names
    assert not [n for n in names if n.startswith(".tmp-")]
    assert not (run_dir / ".resume").exists()
    m = json.loads((run_dir / "metrics.json").read_text())
    assert set(m["test"]) == {"loss", "mae"}
    assert m["epochs"] == 4 and m["seed"] == 1 and m["backend"] == "jax"
    assert m["fit_seconds"] > 0 and m["versions"]["keras"] == keras.__version__
    assert m["engine"] in ("keras", "fast")
    hist = pd.read_csv(run_dir / "history.csv")
    assert list(hist["epoch"]) == [1, 2, 3, 4]
    assert {"loss", "mae", "val_loss", "val_mae"} <= set(hist.columns)
    assert hist["loss"].iloc[-1] < hist["loss"].iloc[0]  # it learned
    assert (run_dir / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "test: " in out and "loss" in out
    # the resolved config is a runnable config
    from mlnnkit.config import load_config

    assert load_config(run_dir / "config.toml").fit.epochs == 4


def test_overrides_and_same_seed_same_metrics(tmp_path, csv):
    cfg = parse_config(regression_config(csv))
    from mlnnkit.train import apply_overrides

    a = run(apply_overrides(cfg, epochs=3, seed=7), None)
    b = run(apply_overrides(cfg, epochs=3, seed=7), None)
    c = run(apply_overrides(cfg, epochs=3, seed=8), None)
    assert a.metrics["epochs"] == 3 and a.metrics["seed"] == 7
    assert a.metrics["test"] == b.metrics["test"]
    assert a.metrics["test"] != c.metrics["test"]


def test_saved_formats_roundtrip(tmp_path, csv, cli):
    cfg_path = write_config(tmp_path / "c.toml", regression_config(csv, **{"model.normalize": True}))
    res = run(parse_config(regression_config(csv, **{"model.normalize": True})), tmp_path / "run")
    x = res.data.x_test
    ref = res.model.predict(x, verbose=0)
    cfg = parse_config(regression_config(csv, **{"model.normalize": True}))
    for name in ("model.keras", "model.h5"):
        m = load_model(tmp_path / "run" / name, cfg)
        np.testing.assert_allclose(m.predict(x, verbose=0), ref, atol=1e-6)
    # weights only, into a model of the same architecture built from the config
    res.model.save_weights(tmp_path / "w.weights.h5")
    m = load_model(tmp_path / "w.weights.h5", cfg, input_shape=(3,))
    np.testing.assert_allclose(m.predict(x, verbose=0), ref, atol=1e-6)
    # evaluate re-computes the run's test metrics from each format
    expected = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    for path in (tmp_path / "run" / "model.keras", tmp_path / "run" / "model.h5", tmp_path / "w.weights.h5"):
        code, out, err = cli("evaluate", path, "--config", cfg_path, "--json")
        assert code == 0, err
        assert out.strip(), (out, err)
        got = json.loads(out)["test"]
        assert got["mae"] == pytest.approx(expected["mae"], rel=1e-5)


def test_legacy_h5_with_undeserializable_loss_is_compiled_from_config(tmp_path, csv):
    # Keras 3 cannot restore a 'mse' string loss from a legacy .h5 ("Could not deserialize
    # 'keras.metrics.mse'"): loading falls back to compile=False + the config's compile.
    m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    m.compile(optimizer="rmsprop", loss="mse", metrics=["mae"])
    m.save(tmp_path / "old.h5")
    with pytest.raises(ValueError, match="deserialize"):
        keras.saving.load_model(tmp_path / "old.h5")
    cfg = parse_config(regression_config(csv))
    loaded = load_model(tmp_path / "old.h5", cfg)
    assert loaded.compiled
    res = loaded.evaluate(np.ones((4, 3)), np.ones((4, 1)), verbose=0, return_dict=True)
    assert set(res) == {"loss", "mae"}
    np.testing.assert_allclose(loaded.get_weights()[0], m.get_weights()[0])


def test_early_stopping_restores_best(tmp_path, csv):
    cfg = parse_config(
        regression_config(
            csv,
            **{
                "fit.epochs": 60,
                "compile.learning_rate": 0.3,  # too high on purpose: val loss wobbles
                "callbacks.early_stopping": {"patience": 2, "restore_best_weights": True},
            },
        )
    )
    res = run(cfg, None)
    val = res.history["val_loss"]
    assert len(val) < 60, "early stopping should have stopped the run"
    best = min(val)
    again = res.model.evaluate(res.data.x_val, res.data.y_val, verbose=0, return_dict=True)["loss"]
    assert again == pytest.approx(best, rel=1e-4)


def test_checkpoint_keeps_best_model(tmp_path, csv):
    cfg = parse_config(
        regression_config(csv, **{"fit.epochs": 8, "compile.learning_rate": 0.2, "callbacks.checkpoint": {}})
    )
    res = run(cfg, tmp_path / "run")
    best_path = tmp_path / "run" / "checkpoints" / "best.keras"
    assert best_path.exists()
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))
    best = keras.saving.load_model(best_path)
    loss = best.evaluate(res.data.x_val, res.data.y_val, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(min(res.history["val_loss"]), rel=1e-4)


def test_reduce_lr_on_plateau_and_schedule(tmp_path, csv):
    cfg = parse_config(
        regression_config(
            csv,
            **{
                "fit.epochs": 6,
                "callbacks.reduce_lr_on_plateau": {"monitor": "loss", "patience": 0, "factor": 0.5, "min_delta": 10.0},
            },
        )
    )
    res = run(cfg, None)
    lrs = res.history["learning_rate"]
    assert lrs[0] == pytest.approx(0.01, rel=1e-6)
    # no improvement of >= 10 ever: halved at the end of every epoch after the first
    # (the logged rate is the one the epoch trained with)
    expected = [0.01] + [0.01 * 0.5 ** (k - 1) for k in range(1, len(lrs))]
    np.testing.assert_allclose(lrs, expected, rtol=1e-5)
    sched = {"name": "ExponentialDecay", "initial_learning_rate": 0.05, "decay_steps": 1, "decay_rate": 0.9}
    res = run(parse_config(regression_config(csv, **{"fit.epochs": 2, "compile.learning_rate": sched})), None)
    opt = res.model.optimizer
    steps = int(opt.iterations.numpy())
    assert steps == 2 * int(np.ceil(192 / 32))
    got = float(keras.ops.convert_to_numpy(opt.learning_rate))
    assert got == pytest.approx(0.05 * 0.9**steps, rel=1e-5)


def test_shape_mismatch_is_a_user_error(tmp_path, csv, cli):
    cfg = write_config(tmp_path / "c.toml", regression_config(csv, **{"model.input_shape": [5]}))
    code, _, err = cli("train", cfg, "--out", tmp_path / "run")
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "shape (3,)" in err and "(5,)" in err
    assert not (tmp_path / "run" / "model.keras").exists()


def test_validation_monitor_without_validation_data(tmp_path, csv, cli):
    cfg = write_config(
        tmp_path / "c.toml",
        regression_config(csv, **{"fit.validation_split": 0.0, "callbacks.early_stopping": {}}),
    )
    code, _, err = cli("train", cfg)
    assert code == 2 and "needs validation data" in err


def _epochs_backed_up(run_dir: Path) -> int:
    meta = run_dir / ".resume" / "backup" / "training_metadata.json"
    try:
        return json.loads(meta.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_run_resumes_from_last_finished_epoch(tmp_path):
    # Enough rows that an epoch takes a noticeable moment, so the kill lands mid-run.
    csv = make_regression_csv(tmp_path / "big.csv", n=30000, n_features=8)
    cfg = write_config(
        tmp_path / "c.toml",
        regression_config(csv, **{"fit.epochs": 12, "fit.batch_size": 8, "fit.engine": "keras"}),
    )
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "mlnnkit", "train", str(cfg), "--out", str(run_dir)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while _epochs_backed_up(run_dir) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    done_before = _epochs_backed_up(run_dir)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= done_before < 12, f"kill did not land mid-run ({done_before} epochs)"
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / "model.keras").exists()

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    resumed_at = _first_epoch_printed(out.stdout)
    assert resumed_at >= done_before + 1, out.stdout[:500]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["epochs"] == 12
    hist = pd.read_csv(run_dir / "history.csv")
    assert list(hist["epoch"]) == list(range(1, 13))
    assert not (run_dir / ".resume").exists()


def _first_epoch_printed(stdout: str) -> int:
    for line in stdout.splitlines():
        if line.startswith("Epoch ") and "/" in line:
            return int(line.split()[1].split("/")[0])
    raise AssertionError(f"no epoch line in output: {stdout[:300]}")
