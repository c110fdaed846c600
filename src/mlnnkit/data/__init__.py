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


ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype="float32") -> np.ndarray:
    """An uninitialised C-contiguous array whose data start on a 64-byte boundary.

    JAX on CPU uses such an array in place (``jax.device_put(a, may_alias=True)``) instead
    of copying it, so the fast fit path trains on a large image set without a second
    copy of it. Loaders write their float arrays into these.

    Example:
        >>> x = aligned_empty((60000, 28, 28)); np.divide(raw, 255, out=x, dtype="float32")
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


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


__all__ = ["Dataset", "aligned_empty", "load_data"]
