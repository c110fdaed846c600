"""The Auto MPG regression (TensorFlow's "basic regression" tutorial).

The table is the one vega_datasets ships as ``cars`` (UCI Auto MPG, 406 rows). As in the
tutorial: rows with missing values are dropped (398 -> 392 usable), ``Origin`` is one-hot
encoded (USA, Europe, Japan), train/test are split at random with the run's seed, and
the target is ``Miles_per_Gallon``. Features are normalized inside the model (set
``model.normalize = true``), adapted on the training split only.
"""

from __future__ import annotations

import numpy as np

from mlnnkit.data import Dataset
from mlnnkit.errors import UserError

FEATURES = [
    "Cylinders",
    "Displacement",
    "Horsepower",
    "Weight_in_lbs",
    "Acceleration",
    "Model_Year",
    "Origin_USA",
    "Origin_Europe",
    "Origin_Japan",
]
TARGET = "Miles_per_Gallon"


def frame():
    """The cleaned table as a pandas DataFrame (features and target)."""
    try:
        from vega_datasets import data
    except ImportError:  # pragma: no cover - a declared dependency
        raise UserError("auto_mpg needs the vega_datasets package: pip install vega_datasets")
    import pandas as pd

    df = data.cars().dropna().copy()
    year = pd.to_datetime(df["Year"]).dt.year - 1900
    df["Model_Year"] = year.astype("float64")
    for origin in ("USA", "Europe", "Japan"):
        df[f"Origin_{origin}"] = (df["Origin"] == origin).astype("float64")
    return df[FEATURES + [TARGET]].astype("float64").reset_index(drop=True)


def load(src, seed: int = 0) -> Dataset:
    df = frame()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(df))
    n_test = int(round(len(df) * src.test_fraction))
    test_idx, train_idx = order[:n_test], order[n_test:]
    x = df[FEATURES].to_numpy("float32")
    y = df[[TARGET]].to_numpy("float32")
    return Dataset(
        x_train=x[train_idx],
        y_train=y[train_idx],
        x_test=x[test_idx],
        y_test=y[test_idx],
        feature_names=list(FEATURES),
        target_names=[TARGET],
        description="auto_mpg",
    )
