"""Issue #17 (train side): Ctrl-C, exact resume, a resume with another config, run
directories whose config.toml runs from anywhere, fit seconds and history columns of a
resumed run. Real subprocesses get the real signals (SIGINT, SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from helpers import make_regression_csv, regression_config, write_config

from mlnnkit import train
from mlnnkit.config import parse_config
from mlnnkit.errors import Interrupted, UserError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}
ENGINES = ["fast", "keras"]


def _backed_up(run_dir: Path) -> int:
    meta = run_dir / ".resume" / "backup" / "training_metadata.json"
    try:
        return json.loads(meta.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def _shuffled_dropout_config(csv: Path, **over) -> dict:
    """Shuffling, dropout and reduce-on-plateau: everything whose state a resume must keep."""
    layers = [
        {"type": "Dense", "units": 16, "activation": "tanh"},
        {"type": "Dropout", "rate": 0.3},
        {"type": "Dense", "units": 1},
    ]
    # min_delta 10: never an improvement, so the rate halves every 2 epochs (its wait
    # counter must survive the kill)
    rlrop = {"monitor": "val_loss", "patience": 2, "factor": 0.5, "min_delta": 10.0}
    cfg = regression_config(
        csv,
        **{"model.layers": layers, "fit.shuffle": True, "callbacks.reduce_lr_on_plateau": rlrop},
    )
    for k, v in over.items():
        node = cfg
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return cfg


class _StopAfter(keras.callbacks.Callback):
    """Ctrl-C in the middle of a run: raises KeyboardInterrupt when epoch `n` ends (after
    the backup, which comes before extra callbacks)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.n:
            raise KeyboardInterrupt


class _Sleep(keras.callbacks.Callback):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(self.seconds)


# ----------------------------------------------------------------- exact resume (#17.4)
_DRIVER = textwrap.dedent(
    """
    import sys, time, keras
    from mlnnkit.config import load_config
    from mlnnkit import train

    class Slow(keras.callbacks.Callback):  # epoch-level only: the fast path runs it
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(float(sys.argv[3]))

    cfg = load_config(sys.argv[1])
    res = train.run(cfg, sys.argv[2], verbose=0, extra_callbacks=[Slow()])
    print("engine", res.metrics["engine"], flush=True)
    """
)


@pytest.mark.parametrize("engine", ENGINES)
def test_kill_9_and_resume_gives_the_uninterrupted_run(tmp_path, engine):
    csv = make_regression_csv(tmp_path / "d.csv", n=300)
    cfg_path = write_config(
        tmp_path / "c.toml",
        _shuffled_dropout_config(csv, **{"fit.epochs": 7, "fit.engine": engine}),
    )
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, str(driver), str(cfg_path), str(run_dir)]
    proc = subprocess.Popen(cmd + ["0.5"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _backed_up(run_dir) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _backed_up(run_dir)
    assert 2 <= done < 7, f"the kill did not land mid-run ({done} epochs backed up)"
    assert not (run_dir / "metrics.json").exists()
    out = subprocess.run(
        cmd + ["0"], env=ENV, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"engine {engine}" in out.stdout

    # the same config and seed, never interrupted, in a process of its own like the killed
    # one (this test process may have switched JAX's 64-bit mode on, which changes streams)
    once = subprocess.run(
        [sys.executable, str(driver), str(cfg_path), str(tmp_path / "whole"), "0"],
        env=ENV, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert once.returncode == 0, once.stderr[-2000:]
    whole_metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    resumed = pd.read_csv(run_dir / "history.csv")
    uninterrupted = pd.read_csv(tmp_path / "whole" / "history.csv")
    assert list(resumed.columns) == list(uninterrupted.columns)
    assert "learning_rate" in resumed.columns  # reduce-on-plateau's halvings are compared too
    pd.testing.assert_frame_equal(resumed, uninterrupted, check_exact=True)
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["test"] == whole_metrics["test"]
    assert m["resumed_from_epoch"] == done and m["epochs"] == 7


@pytest.mark.parametrize("engine", ENGINES)
def test_interrupted_and_resumed_in_process_equals_uninterrupted(tmp_path, engine):
    csv = make_regression_csv(tmp_path / "d.csv", n=200)
    cfg = parse_config(_shuffled_dropout_config(csv, **{"fit.epochs": 6, "fit.engine": engine}))
    whole = train.run(cfg, tmp_path / "whole", verbose=0)
    with pytest.raises(Interrupted, match=r"after epoch 3 of 6; run the same command again"):
        train.run(cfg, tmp_path / "run", verbose=0, extra_callbacks=[_StopAfter(3)])
    assert _backed_up(tmp_path / "run") == 3
    res = train.run(cfg, tmp_path / "run", verbose=0)
    assert res.metrics["resumed_from_epoch"] == 3
    assert res.history == whole.history
    assert res.metrics["test"] == whole.metrics["test"]


def test_early_stopping_state_survives_the_resume(tmp_path):
    csv = make_regression_csv(tmp_path / "d.csv", n=200)
    es = {"monitor": "val_loss", "patience": 2, "min_delta": 10.0, "restore_best_weights": True}
    cfg = parse_config(
        _shuffled_dropout_config(csv, **{"fit.epochs": 12, "callbacks.early_stopping": es})
    )
    whole = train.run(cfg, tmp_path / "whole", verbose=0)
    assert whole.metrics["epochs"] == 3  # stopped by patience 2 (nothing is an improvement)
    with pytest.raises(Interrupted):
        train.run(cfg, tmp_path / "run", verbose=0, extra_callbacks=[_StopAfter(2)])
    res = train.run(cfg, tmp_path / "run", verbose=0)
    assert res.history == whole.history
    assert res.metrics["test"] == whole.metrics["test"]  # the best weights restored alike


# --------------------------------------------------------- resume with another config (#17.5)
def _interrupted_run(tmp_path, csv, **over) -> Path:
    cfg = parse_config(_shuffled_dropout_config(csv, **{"fit.epochs": 5, **over}))
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted):
        train.run(cfg, run_dir, verbose=0, extra_callbacks=[_StopAfter(2)])
    return run_dir


def test_resume_with_another_seed_is_refused_and_fresh_starts_over(tmp_path, cli):
    csv = make_regression_csv(tmp_path / "d.csv", n=200)
    run_dir = _interrupted_run(tmp_path, csv)
    cfg_path = write_config(tmp_path / "c.toml", _shuffled_dropout_config(csv, **{"fit.epochs": 5}))
    code, _, err = cli("train", cfg_path, "--out", run_dir, "--seed", "9")
    assert code == 2 and err.count("\n") == 1, err
    assert "seed: 1 -> 9" in err and "--fresh" in err and "after epoch 2" in err
    assert _backed_up(run_dir) == 2  # the interrupted run is kept

    code, out, err = cli("train", cfg_path, "--out", run_dir, "--seed", "9", "--fresh")
    assert code == 0, err
    assert "resumed" not in out
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["seed"] == 9 and m["epochs"] == 5 and "resumed_from_epoch" not in m
    # the same as a seed-9 run that never saw the seed-1 one
    cfg9 = parse_config(_shuffled_dropout_config(csv, **{"fit.epochs": 5, "seed": 9}))
    assert train.run(cfg9, tmp_path / "nine", verbose=0).metrics["test"] == m["test"]


def test_resume_with_another_architecture_names_the_layer_key(tmp_path):
    csv = make_regression_csv(tmp_path / "d.csv", n=200)
    run_dir = _interrupted_run(tmp_path, csv)
    other = _shuffled_dropout_config(csv, **{"fit.epochs": 5})
    other["model"]["layers"][0]["units"] = 32
    with pytest.raises(UserError, match=r"model\.layers\[0\]\.units: 16 -> 32.*--fresh"):
        train.run(parse_config(other), run_dir, verbose=0)
    same = parse_config(_shuffled_dropout_config(csv, **{"fit.epochs": 5}))
    assert train.run(same, run_dir, verbose=0).metrics["resumed_from_epoch"] == 2


# ------------------------------------------------- fit seconds, history columns (smaller)
def test_fit_seconds_of_a_resumed_run_cover_all_epochs(tmp_path, cli):
    csv = make_regression_csv(tmp_path / "d.csv", n=100)
    cfg = parse_config(regression_config(csv, **{"fit.epochs": 5}))
    with pytest.raises(Interrupted):
        # 3 epochs of at least 0.6 s each before the interruption
        train.run(cfg, tmp_path / "run", verbose=0, extra_callbacks=[_Sleep(0.6), _StopAfter(3)])
    res = train.run(cfg, tmp_path / "run", verbose=0)
    assert res.metrics["fit_seconds"] >= 1.8
    assert res.metrics["seconds_per_epoch"] == pytest.approx(res.metrics["fit_seconds"] / 5, abs=1e-3)


def test_history_csv_has_no_validation_columns_without_validation(tmp_path):
    csv = make_regression_csv(tmp_path / "d.csv", n=100)
    cfg = parse_config(regression_config(csv, **{"fit.epochs": 2, "fit.validation_split": 0.0}))
    train.run(cfg, tmp_path / "run", verbose=0)
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(hist.columns) == ["epoch", "loss", "mae"]
    assert not hist.isna().any().any()


# ------------------------------------------------- config.toml runs from anywhere (#17.6)
def _write_table(kind: str, path: Path, df: pd.DataFrame) -> Path:
    if kind == "csv":
        df.to_csv(path, index=False)
    elif kind == "parquet":
        df.to_parquet(path, index=False)
    else:
        np.savez(path, **{c: df[c].to_numpy() for c in df.columns})
    return path


@pytest.mark.parametrize("kind", ["csv", "npz", "parquet"])
def test_run_dir_config_evaluates_from_another_cwd(tmp_path, kind, cli, monkeypatch):
    src = make_regression_csv(tmp_path / "src.csv", n=150)
    df = pd.read_csv(src)
    (tmp_path / "proj" / "data").mkdir(parents=True)
    _write_table(kind, tmp_path / "proj" / "data" / f"table.{kind}", df)
    _write_table(kind, tmp_path / "proj" / "data" / f"val.{kind}", df.iloc[:40])
    cfg = regression_config(Path(f"data/table.{kind}"), **{"fit.epochs": 2})
    cfg["data"]["source"] = kind
    cfg["fit"]["validation_split"] = 0.0
    cfg["fit"]["validation"] = {
        "source": kind, "path": f"data/val.{kind}", "features": "f*", "targets": ["target"]
    }
    write_config(tmp_path / "proj" / "c.toml", cfg)
    monkeypatch.chdir(tmp_path / "proj")
    code, _, err = cli("train", "c.toml", "--out", "runs/x")
    assert code == 0, err
    written = (tmp_path / "proj" / "runs" / "x" / "config.toml").read_text()
    assert f'path = "../../data/table.{kind}"' in written
    assert f'path = "../../data/val.{kind}"' in written
    test = json.loads((tmp_path / "proj" / "runs" / "x" / "metrics.json").read_text())["test"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rd = tmp_path / "proj" / "runs" / "x"
    code, out, err = cli("evaluate", rd / "model.keras", "-c", rd / "config.toml", "--json")
    assert code == 0, err
    assert json.loads(out)["test"] == pytest.approx(test, rel=1e-6)
    # and the copy trains again, from there, to the same numbers
    code, _, err = cli("train", rd / "config.toml", "--out", "again")
    assert code == 0, err
    assert json.loads((elsewhere / "again" / "metrics.json").read_text())["test"] == test


# ------------------------------------------------------------------------- Ctrl-C (#17.3)
def _sigint_when_backed_up(cmd: list[str], run_dir: Path, epochs: int = 1, timeout: float = 240):
    """Start `cmd`, send SIGINT once `run_dir`'s backup holds `epochs` epochs."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    chunks: dict[str, list[str]] = {"out": [], "err": []}
    readers = [
        threading.Thread(target=lambda: chunks["out"].extend(proc.stdout), daemon=True),
        threading.Thread(target=lambda: chunks["err"].extend(proc.stderr), daemon=True),
    ]
    for t in readers:
        t.start()
    deadline = time.time() + timeout
    while _backed_up(run_dir) < epochs and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    for t in readers:
        t.join(timeout=10)
    return proc.returncode, "".join(chunks["out"]), "".join(chunks["err"])


@pytest.mark.parametrize("engine", ENGINES)
def test_ctrl_c_in_train_is_one_line_exit_130_and_resumable(tmp_path, engine):
    csv = make_regression_csv(tmp_path / "big.csv", n=4000, n_features=8)
    over = {"fit.epochs": 500, "fit.batch_size": 8, "fit.engine": engine}
    cfg = write_config(tmp_path / "c.toml", regression_config(csv, **over))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "mlnnkit", "train", str(cfg), "--out", str(run_dir)]
    code, _, err = _sigint_when_backed_up(cmd, run_dir)
    assert code == 130, err[-2000:]
    assert err.count("\n") == 1 and err.startswith("error: interrupted after epoch "), err[-2000:]
    done = _backed_up(run_dir)
    assert done >= 1
    assert f"after epoch {done} of 500; run the same command again" in err
    assert f"continue from epoch {done + 1}" in err
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model.keras").exists()
    assert not [p for p in run_dir.rglob(".tmp-*")]  # nothing half-written left behind
