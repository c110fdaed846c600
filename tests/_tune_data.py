"""Tiny generated data and run configs for the tuning tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]

SPACE = """
[tune.space]
"model.layers[0].units" = {int = [4, 16], step = 4}
"compile.learning_rate" = {float = [1e-3, 3e-2], log = true}
"fit.batch_size" = {choices = [16, 32]}
"""


def write_data(folder: Path, n: int = 240, seed: int = 0) -> Path:
    """A 3-class table: label from a nonlinear function of four features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int) + (x[:, 3] > 0.8)
    path = folder / "table.csv"
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "d": x[:, 3], "label": y}).to_csv(
        path, index=False
    )
    return path


def write_config(
    folder: Path, *, epochs: int = 3, trials: int = 3, space: str = SPACE, tune: str = "",
    name: str = "tiny", batch_size: int = 32, compile_extra: str = "",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_data(folder)
    cfg = folder / "tiny.toml"
    cfg.write_text(f"""
name = "{name}"
seed = 3
[data]
source = "csv"
path = "table.csv"
features = "a,b,c,d"
targets = "label"
[[model.layers]]
type = "Dense"
units = 8
activation = "relu"
[[model.layers]]
type = "Dropout"
rate = 0.1
[[model.layers]]
type = "Dense"
units = 3
activation = "softmax"
[compile]
optimizer = "adam"
loss = "sparse_categorical_crossentropy"
metrics = ["accuracy"]
{compile_extra}
[fit]
epochs = {epochs}
batch_size = {batch_size}
validation_split = 0.25
[tune]
metric = "val_accuracy"
trials = {trials}
pruner = "none"
{tune}
{space}
""")
    return cfg


def mlnnkit_process(*args, **kw) -> subprocess.Popen:
    """`python -m mlnnkit ARGS` as a child process (the repo's src first on the path)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("KERAS_BACKEND", "jax")
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.Popen(
        [sys.executable, "-m", "mlnnkit", *map(str, args)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )


def load_study(storage: str, name: str = "tiny"):
    import optuna

    from mlnnkit.tune._storage import normalize_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=normalize_url(storage))


def states(study) -> dict[int, str]:
    return {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
