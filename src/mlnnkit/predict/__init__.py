"""Inference: the compiled forward pass, the file kinds, the file-level work, and Dask.

- :mod:`~mlnnkit.predict._forward`: :func:`predict_array` and :func:`predict_stream`, a
  model's forward pass compiled once (XLA) and fed chunk by chunk by worker threads;
- one module per file kind, each holding its reader (a :class:`Source`) and writer (a
  :class:`Sink`): ``_npy``, ``_csv``, ``_parquet``, ``_netcdf``, ``_hdf5``, listed in
  :data:`FILE_KINDS` (:mod:`~mlnnkit.predict._kinds`), found by suffix (:func:`kind_of`);
- :mod:`~mlnnkit.predict._files`: :func:`prepare`, :func:`predict_file`,
  :func:`plan_jobs`, :func:`predict_files` (what ``mlnnkit predict`` runs);
- :mod:`~mlnnkit.predict._dask`: :func:`predict_files_dask` (``mlnnkit predict --dask``),
  imported on first use.

Example:
    >>> import numpy as np, keras
    >>> from mlnnkit.predict import predict_array
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> predict_array(model, np.zeros((5, 3), "float32")).shape
    (5, 2)
"""

from __future__ import annotations

from mlnnkit.predict._base import Sink, Source
from mlnnkit.predict._files import (
    FileResult,
    check_outputs_free,
    error_text,
    load_model_for_predict,
    output_names,
    plan_jobs,
    predict_file,
    predict_files,
    prepare,
)
from mlnnkit.predict._forward import (
    Forward,
    blocks_of,
    compute_dtype,
    default_chunk_rows,
    forward_for,
    predict_array,
    predict_stream,
)
from mlnnkit.predict._kinds import FILE_KINDS, KINDS, kind_of, open_sink, open_source

_LAZY = {"predict_files_dask": "mlnnkit.predict._dask", "dask_client": "mlnnkit.predict._dask"}


def __getattr__(name: str):
    # Dask's machinery is imported on first use only.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FILE_KINDS",
    "KINDS",
    "FileResult",
    "Forward",
    "Sink",
    "Source",
    "blocks_of",
    "check_outputs_free",
    "compute_dtype",
    "dask_client",
    "default_chunk_rows",
    "error_text",
    "forward_for",
    "kind_of",
    "load_model_for_predict",
    "open_sink",
    "open_source",
    "output_names",
    "plan_jobs",
    "predict_array",
    "predict_file",
    "predict_files",
    "predict_files_dask",
    "predict_stream",
    "prepare",
]
