"""Data sources behind one small interface: ``load_data(cfg) -> Dataset``.

One module per source family:

- :mod:`~mlnnkit.data.images`: ``mnist`` and ``fashion_mnist`` (standard idx files from a
  local folder, Debian's ``dataset-fashion-mnist`` by default, else Keras's download);
- :mod:`~mlnnkit.data.auto_mpg`: the Auto MPG regression table (vega_datasets ``cars``);
- :mod:`~mlnnkit.data.tables`: ``csv``, ``parquet`` and ``npz`` tables with named columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mlnnkit.config import RunConfig


@dataclass
class Dataset:
    """Arrays of one run plus what is known about them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    feature_names: list[str] | None = None
    target_names: list[str] | None = None
    description: str = ""
    meta: dict = field(default_factory=dict)

    def summary(self) -> str:
        val = f", {len(self.x_val)} validation" if self.x_val is not None else ""
        return (
            f"{self.description or 'data'}: {len(self.x_train)} training{val}, "
            f"{len(self.x_test)} test rows; sample shape {tuple(self.x_train.shape[1:])}"
        )


def load_data(cfg: RunConfig) -> Dataset:
    """Load the config's data source, split it, and attach the validation rows.

    ``fit.validation_split`` holds out the last fraction of the training rows (as Keras
    does); ``fit.validation`` reads a separate table.
    """
    from mlnnkit.data import auto_mpg, images, tables

    src = cfg.data
    if src.source in ("mnist", "fashion_mnist"):
        ds = images.load(src, base_dir=cfg.base_dir)
    elif src.source == "auto_mpg":
        ds = auto_mpg.load(src, seed=cfg.seed)
    else:
        ds = tables.load(src, seed=cfg.seed, base_dir=cfg.base_dir)

    if cfg.fit.validation is not None:
        v = tables.load(cfg.fit.validation, seed=cfg.seed, base_dir=cfg.base_dir, split=False)
        ds.x_val, ds.y_val = v.x_train, v.y_train
    elif cfg.fit.validation_split > 0:
        n_val = round(len(ds.x_train) * cfg.fit.validation_split)
        if n_val < 1 or n_val >= len(ds.x_train):
            from mlnnkit.errors import UserError

            raise UserError(
                f"fit.validation_split = {cfg.fit.validation_split} leaves no rows for "
                f"training or validation ({len(ds.x_train)} training rows)"
            )
        cut = len(ds.x_train) - n_val
        ds.x_val, ds.y_val = ds.x_train[cut:], ds.y_train[cut:]
        ds.x_train, ds.y_train = ds.x_train[:cut], ds.y_train[:cut]
    return ds


__all__ = ["Dataset", "load_data"]
