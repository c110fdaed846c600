"""Data sources behind one small interface: ``load_data(cfg) -> Dataset``.

One module per source family, each holding its part of the run config (``CONFIG``, a
:class:`SourceConfig`) and ``load(src, seed=, base_dir=)``, listed in
:data:`mlnnkit.data._registry.SOURCES`:

- :mod:`~mlnnkit.data.images`: ``mnist`` and ``fashion_mnist`` (standard idx files from a
  local folder, Debian's ``dataset-fashion-mnist`` by default, else Keras's download);
- :mod:`~mlnnkit.data.auto_mpg`: the Auto MPG regression table (vega_datasets ``cars``);
- :mod:`~mlnnkit.data.tables`: ``csv``, ``parquet`` and ``npz`` tables with named columns
  (also the package's one table reader, for fine-tuning too);
- :mod:`~mlnnkit.data.rows`: the one row splitter and the one policy for NaN/Inf rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlnnkit.data._base import ALIGNMENT, Dataset, SourceConfig, aligned_empty

if TYPE_CHECKING:
    from mlnnkit.config import RunConfig


def load_data(cfg: RunConfig) -> Dataset:
    """Load the config's data source, split it, and attach the validation rows.

    ``fit.validation_split`` holds out the last fraction of the training rows (as Keras
    does); ``fit.validation`` reads a separate table.
    """
    from mlnnkit.data import tables
    from mlnnkit.data._registry import source_module

    src = cfg.data
    ds = source_module(src).load(src, seed=cfg.seed, base_dir=cfg.base_dir)

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


__all__ = ["ALIGNMENT", "Dataset", "SourceConfig", "aligned_empty", "load_data"]
