"""The Auto MPG regression (TensorFlow's "basic regression" tutorial).

The table is the one vega_datasets ships as ``cars`` (UCI Auto MPG, 406 rows). As in the
tutorial: rows with missing values are dropped (398 -> 392 usable), ``Origin`` is one-hot
encoded (USA, Europe, Japan), train/test are split as the tutorial does (``DataFrame.sample(frac=0.8,
random_state=seed)``), and
the target is ``Miles_per_Gallon``. Features are normalized inside the model (set
``model.normalize = true``), adapted on the training split only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from mlnnkit.data._base import Dataset, SourceConfig
from mlnnkit.errors import UserError


class AutoMpgSource(SourceConfig):
    """The Auto MPG table (vega_datasets `cars`): predict Miles_per_Gallon."""

    source: Literal["auto_mpg"]
    test_fraction: float = Field(0.2, gt=0, lt=1)


CONFIG = AutoMpgSource  # this source's part of the run config

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

    # Read the file vega_datasets ships (its own reader passes options pandas deprecates).
    df = pd.read_json(data.cars.filepath).dropna().copy()
    year = pd.to_datetime(df["Year"]).dt.year - 1900
    df["Model_Year"] = year.astype("float64")
    for origin in ("USA", "Europe", "Japan"):
        df[f"Origin_{origin}"] = (df["Origin"] == origin).astype("float64")
    return df[FEATURES + [TARGET]].astype("float64").reset_index(drop=True)


def load(src, seed: int = 0, *, base_dir: Path = Path(".")) -> Dataset:
    """Load the table; train/test split as the tutorial does (a seeded pandas sample, kept
    rather than :func:`mlnnkit.data.rows.split_rows` so the rows match the tutorial's)."""
    df = frame()
    # The tutorial's split: a seeded pandas sample for training, the rest for testing.
    train = df.sample(frac=1.0 - src.test_fraction, random_state=seed)
    test = df.drop(train.index)
    return Dataset(
        x_train=train[FEATURES].to_numpy("float32"),
        y_train=train[[TARGET]].to_numpy("float32"),
        x_test=test[FEATURES].to_numpy("float32"),
        y_test=test[[TARGET]].to_numpy("float32"),
        feature_names=list(FEATURES),
        target_names=[TARGET],
        description="auto_mpg",
    )
