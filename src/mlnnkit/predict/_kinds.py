"""The file kinds of ``mlnnkit predict``, found by suffix: one module per kind (its
``NAME``, ``SUFFIXES``, ``SCENE``, ``SOURCE`` reader and ``SINK`` writer), listed once in
:data:`FILE_KINDS`. Adding a kind is one new module and one entry in the tuple below.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mlnnkit.errors import UserError
from mlnnkit.predict import _csv, _hdf5, _netcdf, _npy, _parquet
from mlnnkit.predict._base import Sink, Source

FILE_KINDS = {m.NAME: m for m in (_npy, _csv, _parquet, _netcdf, _hdf5)}

TABLE_SUFFIXES = {s: m.NAME for m in FILE_KINDS.values() if not m.SCENE for s in m.SUFFIXES}
SCENE_SUFFIXES = {s: m.NAME for m in FILE_KINDS.values() if m.SCENE for s in m.SUFFIXES}
KINDS = {**TABLE_SUFFIXES, **SCENE_SUFFIXES}  # suffix -> kind name


def kind_of(path: str | os.PathLike) -> str:
    """The file kind from the suffix: ``npy``, ``csv``, ``parquet``, ``netcdf`` or ``hdf5``."""
    suffix = Path(path).suffix.lower()
    if suffix not in KINDS:
        raise UserError(
            f"{path}: unsupported file type {suffix or '(no suffix)'!r} "
            f"(use {', '.join(sorted(KINDS))})"
        )
    return KINDS[suffix]


def is_scene(kind: str) -> bool:
    """True for kinds whose outputs go into a copy of the input file (NetCDF, HDF5)."""
    return FILE_KINDS[kind].SCENE


def open_source(path, n_inputs: int, inputs=None, model_names=None) -> Source:
    """Open ``path`` and choose the model's ``n_inputs`` inputs in it (validated here,
    before any output exists)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not an input file; for the files in it pass '{path}/*'")
    kind = kind_of(path)
    if not path.is_file():
        raise UserError(f"input file not found: {path}")
    source = FILE_KINDS[kind].SOURCE.open(path, n_inputs, inputs, model_names)
    if source.n_rows == 0:  # an empty input is refused here, on every path (Dask's too)
        source.close()
        raise UserError(
            f"{path}: no data rows"
            + (" (only a header)" if kind == "csv" else "")
            + "; nothing to predict"
        )
    return source


def open_sink(
    tmp: Path, out_kind: str, source: Source, names: list[str], attrs: dict, dtype=np.float32,
    *, flags: dict | None = None, flags_path: Path | None = None,
) -> Sink:
    """A writer of the ``names`` outputs (of ``dtype``) of ``source``'s rows into the
    temporary file ``tmp`` (:func:`~mlnnkit.predict.prepare` has checked that a scene's
    output is of the input's own kind); with ``flags`` (the flag variable's CF
    attributes) it writes the ``quality_flags`` too (beside, in ``flags_path``, for a kind
    with ``FLAGS_SIBLING``)."""
    sink = FILE_KINDS[out_kind].SINK
    if flags is None:
        return sink(tmp, source, names, attrs, dtype)
    if sink.FLAGS_SIBLING:
        return sink(tmp, source, names, attrs, dtype, flags=flags, flags_path=flags_path)
    return sink(tmp, source, names, attrs, dtype, flags=flags)


def flags_sibling(out_kind: str, output_path: Path) -> Path | None:
    """Where a kind that holds one array per file writes the flags (``OUT.flags.npy``)."""
    if not FILE_KINDS[out_kind].SINK.FLAGS_SIBLING:
        return None
    p = Path(output_path)
    return p.with_name(p.stem + ".flags" + p.suffix)
