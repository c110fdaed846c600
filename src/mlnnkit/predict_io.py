"""Read a model's inputs from files and write its predictions: the file side of
``mlnnkit predict``.

Kinds, by suffix:

- tables, one row per sample: ``.npy`` (memory-mapped; columns = the model's inputs in
  order), ``.csv`` and ``.parquet`` (columns chosen by name);
- scenes, variables of any shape whose every element is a sample: NetCDF (``.nc``,
  ``.nc4``, ``.cdf``; read with xarray, so fill values and ``scale_factor`` are decoded and
  masked pixels are NaN; ``group/name`` reaches variables in groups) and HDF5 (``.h5``,
  ``.hdf5``, ``.he5``; h5py, names are dataset paths). The outputs are written back into a
  copy of the input file as variables of the inputs' shape and dimensions, everything else
  in the file (variables, coordinates, attributes) kept.

Inputs are chosen by ``inputs`` (names, comma list or globs), else by the input names an
imported legacy network keeps in its scaling layer, else by position (all columns of a
table, or all data variables of a scene, when their number is the model's). Every output
file is written under a temporary name and renamed when complete; anything wrong with an
input raises :class:`~mlnnkit.errors.UserError` naming the file and what to pass instead.

Example:
    >>> from mlnnkit.predict_io import predict_file
    >>> predict_file(model, "granule.nc", "granule_out.nc", inputs="Rrs_*")  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import glob
import itertools
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlnnkit import _atomic
from mlnnkit.errors import UserError

TABLE_SUFFIXES = {".npy": "npy", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
SCENE_SUFFIXES = {
    ".nc": "netcdf", ".nc4": "netcdf", ".cdf": "netcdf", ".netcdf": "netcdf",
    ".h5": "hdf5", ".hdf5": "hdf5", ".he5": "hdf5",
}  # fmt: skip
KINDS = {**TABLE_SUFFIXES, **SCENE_SUFFIXES}

# Rows moved per block between the reader, the compute threads and the writer: about
# 32 MB of inputs and outputs, so memory stays bounded whatever the size of the file.
_BLOCK_BYTES = 32 << 20

# netCDF-C and HDF5 are not thread-safe: every read or write of a scene file takes this lock.
_FILE_LOCK = threading.RLock()


def kind_of(path: str | os.PathLike) -> str:
    """The file kind from the suffix: ``npy``, ``csv``, ``parquet``, ``netcdf`` or ``hdf5``."""
    suffix = Path(path).suffix.lower()
    if suffix not in KINDS:
        raise UserError(
            f"{path}: unsupported file type {suffix or '(no suffix)'!r} "
            f"(use {', '.join(sorted(KINDS))})"
        )
    return KINDS[suffix]


def model_io_names(model) -> tuple[list[str] | None, list[str] | None]:
    """Input and output names kept by a model (the ``names`` of the InputScaling and
    OutputScaling layers of an imported legacy network), or ``None`` for each."""
    from mlnnkit.layers import InputScaling, OutputScaling

    def walk(layer):
        for sub in getattr(layer, "layers", []) or []:
            yield sub
            yield from walk(sub)

    ins = outs = None
    for layer in walk(model):
        if isinstance(layer, InputScaling) and layer.names and ins is None:
            ins = [str(n) for n in layer.names]
        elif isinstance(layer, OutputScaling) and layer.names:
            outs = [str(n) for n in layer.names]
    return ins, outs


def _split_names(spec: str | Sequence[str] | None) -> list[str] | None:
    if spec is None:
        return None
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
    items = [s for s in items if s]
    return items or None


def _choose(available: list[str], spec, n: int, model_names, *, path, what: str) -> list[str]:
    """Pick ``n`` of ``available`` (columns or variables) for the model's inputs."""
    items = _split_names(spec)
    shown = ", ".join(available[:12]) + (" ..." if len(available) > 12 else "")
    if items is not None:
        chosen: list[str] = []
        for item in items:
            if item in available:
                hits = [item]
            elif any(ch in item for ch in "*?["):
                hits = [a for a in available if fnmatch.fnmatchcase(a, item)]
            else:
                hits = []
            if not hits:
                raise UserError(f"{path}: no {what} {item!r} (the file has: {shown})")
            chosen.extend(h for h in hits if h not in chosen)
        if len(chosen) != n:
            raise UserError(
                f"{path}: --inputs chose {len(chosen)} {what}s ({', '.join(chosen[:8])}"
                f"{' ...' if len(chosen) > 8 else ''}) but the model takes {n} inputs"
            )
        return chosen
    if model_names and len(model_names) == n:
        missing = [m for m in model_names if m not in available]
        if not missing:
            return list(model_names)
        if len(available) != n:
            raise UserError(
                f"{path}: the model's input {what}s {', '.join(missing[:5])} are not in the "
                f"file (it has: {shown}); pass --inputs with the {n} names in the model's order"
            )
    if len(available) == n:
        return list(available)
    raise UserError(
        f"{path}: the file has {len(available)} {what}s but the model takes {n} inputs; "
        f"pass --inputs with the {n} names in the model's order (the file has: {shown})"
    )


def natural_key(name: str) -> tuple:
    """Sort key comparing the numbers in names as numbers: ``Rrs_412 < Rrs_1020``.

    Example:
        >>> sorted(["Rrs_1020", "Rrs_412", "Rrs_443"], key=natural_key)
        ['Rrs_412', 'Rrs_443', 'Rrs_1020']
    """
    return tuple((0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", name) if t)


def order_note(spec, model_names, chosen: list[str], listing: str) -> str:
    """Says where the order of the ``chosen`` inputs came from: ``spec`` (``--inputs``,
    globs expanded in the file's ``listing`` order), the model's own input names, or the
    file's ``listing`` (e.g. ``"the file's column order"``)."""
    items = _split_names(spec)
    if items is not None:
        if any(any(ch in i for ch in "*?[") for i in items):
            return f"--inputs order; globs in {listing}"
        return "--inputs order as given"
    if model_names and list(model_names) == list(chosen):
        return "the model's own input names"
    return listing


def _block_rows(n_cols: int, block_rows: int | None) -> int:
    if block_rows:
        return max(1, int(block_rows))
    return max(4096, _BLOCK_BYTES // (4 * max(1, n_cols)))


# --------------------------------------------------------------------------- sources


@dataclass
class Source:
    """The model's inputs in one file: ``n_rows`` samples of ``columns`` (model order).

    ``read(start, stop)`` returns rows ``start:stop`` as a float32 ``(rows, n_inputs)``
    array; ``blocks(block_rows)`` yields ``(start, block)`` through the file in order;
    ``ranges(block_rows)`` are row ranges cheap to read independently (Dask tasks).
    """

    path: Path
    kind: str
    n_rows: int
    columns: list[str]
    shape: tuple[int, ...] = ()  # a scene's shape (the rows are its elements, C order)
    extra: dict = field(default_factory=dict)
    order: str = ""  # where the order of ``columns`` came from (printed by the CLI)

    def ranges(self, block_rows: int | None = None) -> list[tuple[int, int]]:
        b = _block_rows(len(self.columns), block_rows)
        return [(i, min(i + b, self.n_rows)) for i in range(0, self.n_rows, b)]

    def blocks(self, block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        for start, stop in self.ranges(block_rows):
            yield start, self.read(start, stop)

    def read(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass


class NpySource(Source):
    @classmethod
    def open(cls, path: Path, n_inputs: int, inputs=None, model_names=None) -> NpySource:
        if inputs:
            raise UserError(
                f"{path}: a .npy file has no column names, so --inputs does not apply; its "
                f"columns must be the model's {n_inputs} inputs in order"
            )
        try:
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - numpy raises several types
            raise UserError(f"{path}: cannot read .npy file: {' '.join(str(e).split())}") from None
        if x.ndim == 1 and n_inputs == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2:
            raise UserError(f"{path}: array of shape {x.shape}; expected (rows, {n_inputs})")
        if x.shape[1] != n_inputs:
            raise UserError(
                f"{path}: {x.shape[1]} columns but the model takes {n_inputs} inputs "
                f"(rows = samples, columns = the model's inputs in order)"
            )
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise UserError(f"{path}: array of dtype {x.dtype}; numbers are needed")
        cols = [f"column_{i}" for i in range(n_inputs)]
        src = cls(path, "npy", int(x.shape[0]), cols, order="the array's column order")
        src.extra["array"] = x
        return src

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.extra["array"][start:stop]  # a view of the map: cast chunk by chunk

    def close(self) -> None:
        self.extra.pop("array", None)


def _numeric_block(df, path, start) -> np.ndarray:
    try:
        return df.to_numpy(dtype=np.float32, na_value=np.nan)
    except (ValueError, TypeError):
        for col in df.columns:
            try:
                df[col].to_numpy(dtype=np.float32, na_value=np.nan)
            except (ValueError, TypeError):
                bad = df[col][~df[col].map(_is_number)]
                row = start + int(bad.index[0] - df.index[0]) + 1 if len(bad) else "?"
                raise UserError(
                    f"{path}: column {col!r} holds a non-numeric value "
                    f"{str(bad.iloc[0])[:30] if len(bad) else ''!r} (data row {row})"
                ) from None
        raise


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


class CsvSource(Source):
    @classmethod
    def open(cls, path: Path, n_inputs: int, inputs=None, model_names=None) -> CsvSource:
        import pandas as pd

        try:
            header = pd.read_csv(path, nrows=0)
        except Exception as e:  # noqa: BLE001 - pandas parser errors
            raise UserError(f"{path}: cannot read CSV: {' '.join(str(e).split())}") from None
        available = [str(c) for c in header.columns]
        cols = _choose(available, inputs, n_inputs, model_names, path=path, what="column")
        with open(path, "rb") as f:  # data rows = non-blank lines after the header
            n = sum(1 for line in f if line.strip()) - 1
        order = order_note(inputs, model_names, cols, "the file's column order")
        return cls(path, "csv", max(n, 0), cols, order=order)

    def ranges(self, block_rows=None):
        return [(0, self.n_rows)] if self.n_rows else []  # CSV cannot seek to a row

    def blocks(self, block_rows=None):
        import pandas as pd

        b = _block_rows(len(self.columns), block_rows)
        start = 0
        try:
            reader = pd.read_csv(self.path, usecols=self.columns, chunksize=b)
            for df in reader:
                yield start, _numeric_block(df[self.columns], self.path, start)
                start += len(df)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{self.path}: cannot read CSV: {' '.join(str(e).split())}") from None
        if start != self.n_rows:
            raise UserError(f"{self.path}: read {start} data rows, expected {self.n_rows}")

    def read(self, start, stop):
        import pandas as pd

        df = pd.read_csv(
            self.path, usecols=self.columns, skiprows=range(1, start + 1), nrows=stop - start
        )
        return _numeric_block(df[self.columns], self.path, start)


class ParquetSource(Source):
    @classmethod
    def open(cls, path: Path, n_inputs: int, inputs=None, model_names=None) -> ParquetSource:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{path}: cannot read Parquet: {' '.join(str(e).split())}") from None
        schema = pf.schema_arrow
        available = list(schema.names)
        cols = _choose(available, inputs, n_inputs, model_names, path=path, what="column")
        for c in cols:
            t = schema.field(c).type
            if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
                raise UserError(f"{path}: column {c!r} has type {t}; numbers are needed")
        meta = pf.metadata
        bounds = np.cumsum([0, *(meta.row_group(i).num_rows for i in range(meta.num_row_groups))])
        order = order_note(inputs, model_names, cols, "the file's column order")
        src = cls(path, "parquet", int(meta.num_rows), cols, order=order)
        src.extra["groups"] = bounds
        return src

    def _table_to_array(self, table) -> np.ndarray:
        cols = [table.column(c).to_numpy(zero_copy_only=False) for c in self.columns]
        return np.column_stack([np.asarray(c, dtype=np.float32) for c in cols]) if cols else None

    def ranges(self, block_rows=None):
        g = self.extra["groups"]
        return [(int(a), int(b)) for a, b in itertools.pairwise(g) if b > a]

    def blocks(self, block_rows=None):
        import pyarrow.parquet as pq

        b = _block_rows(len(self.columns), block_rows)
        start = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=b, columns=self.columns):
            x = self._table_to_array(batch)
            yield start, x
            start += len(x)

    def read(self, start, stop):
        import pyarrow.parquet as pq

        g = self.extra["groups"]
        first = int(np.searchsorted(g, start, side="right") - 1)
        last = int(np.searchsorted(g, stop, side="left"))
        pf = pq.ParquetFile(self.path)
        table = pf.read_row_groups(list(range(first, last)), columns=self.columns)
        return self._table_to_array(table.slice(start - int(g[first]), stop - start))


class _SceneSource(Source):
    """Variables of one shape; rows are their elements, read whole leading-axis slabs."""

    def ranges(self, block_rows=None):
        per_line = int(np.prod(self.shape[1:])) if len(self.shape) > 1 else 1
        lines = max(1, _block_rows(len(self.columns), block_rows) // per_line)
        n_lines = self.shape[0] if self.shape else 0
        return [
            (i * per_line, min(i + lines, n_lines) * per_line) for i in range(0, n_lines, lines)
        ]

    def _lines(self, start, stop) -> tuple[int, int]:
        per_line = int(np.prod(self.shape[1:])) if len(self.shape) > 1 else 1
        if start % per_line or stop % per_line and stop != self.n_rows:
            raise ValueError("scene reads must cover whole lines")
        return start // per_line, -(-stop // per_line)

    def read(self, start, stop):
        a, b = self._lines(start, stop)
        out = np.empty((stop - start, len(self.columns)), np.float32)
        with _FILE_LOCK:
            for j, name in enumerate(self.columns):
                out[:, j] = self._read_var(name, a, b).reshape(-1)
        return out


def _nc_split(name: str) -> tuple[str | None, str]:
    name = name.strip("/")
    if "/" in name:
        g, v = name.rsplit("/", 1)
        return g, v
    return None, name


class NetcdfSource(_SceneSource):
    @classmethod
    def open(cls, path: Path, n_inputs: int, inputs=None, model_names=None) -> NetcdfSource:
        import xarray as xr

        datasets: dict = {}

        def group(g):
            if g not in datasets:
                try:
                    with _FILE_LOCK:
                        datasets[g] = xr.open_dataset(path, group=g, cache=False)
                except Exception as e:  # noqa: BLE001 - backends raise many types
                    msg = " ".join(str(e).split())
                    if g is not None:
                        raise UserError(f"{path}: cannot open group {g!r}: {msg[:200]}") from None
                    if "did not find a match" in msg or "Unknown file format" in msg:
                        msg = "not a NetCDF (or HDF5) file"
                    raise UserError(f"{path}: cannot read NetCDF: {msg[:200]}") from None
            return datasets[g]

        try:
            root = group(None)
            available = [str(v) for v in root.data_vars]
            requested = _split_names(inputs)
            if requested:  # names in groups are looked up in their group
                for r in requested:
                    g, v = _nc_split(r)
                    if g is not None:
                        ds = group(g)
                        available += [f"{g}/{n}" for n in ds.data_vars if f"{g}/{n}" not in available]
            cols = _choose(available, inputs, n_inputs, model_names, path=path, what="variable")
            shapes = {}
            for c in cols:
                g, v = _nc_split(c)
                shapes[c] = (tuple(group(g)[v].shape), tuple(group(g)[v].dims))
            first = shapes[cols[0]]
            for c in cols[1:]:
                if shapes[c][0] != first[0]:
                    raise UserError(
                        f"{path}: variable {c!r} has shape {shapes[c][0]} but {cols[0]!r} has "
                        f"{first[0]}; the model's inputs must be variables of one shape"
                    )
            shape = first[0]
        except BaseException:
            for ds in datasets.values():
                ds.close()
            raise
        order = order_note(inputs, model_names, cols, "the file's variable order")
        src = cls(path, "netcdf", int(np.prod(shape)) if shape else 1, cols, shape, order=order)
        src.extra.update(datasets=datasets, dims=first[1])
        return src

    def _read_var(self, name, a, b):
        g, v = _nc_split(name)
        da = self.extra["datasets"][g][v]
        if not da.ndim:
            return np.asarray(da.values, np.float32)
        return np.asarray(da[a:b].values, dtype=np.float32)

    def close(self):
        with _FILE_LOCK:
            for ds in self.extra.get("datasets", {}).values():
                ds.close()
        self.extra["datasets"] = {}


_CF_ENCODING = {"_FillValue", "missing_value", "scale_factor", "add_offset"}


def _h5_datasets(f) -> tuple[list[str], dict[str, bool]]:
    """The numeric datasets of an HDF5 file (paths) in the file's own order, and for each
    group (by path prefix) whether that order is its creation order: the creation order
    in groups that track it (h5py ``track_order``), else the names with their numbers
    compared as numbers (HDF5 itself lists names byte by byte: ``Rrs_1020`` first)."""
    import h5py

    out: list[str] = []
    tracked: dict[str, bool] = {}
    seen: set = set()

    def walk(group, prefix: str) -> None:
        crt = group.id.get_create_plist().get_link_creation_order()
        by_creation = bool(crt & h5py.h5p.CRT_ORDER_TRACKED)
        names = list(group)  # creation order when tracked, else HDF5's name order
        if not by_creation:
            names.sort(key=natural_key)
        tracked[prefix] = by_creation
        for n in names:
            if not isinstance(group.get(n, getlink=True), h5py.HardLink):
                continue  # soft and external links: the object is listed where it lives
            obj = group[n]
            if obj.id in seen:
                continue
            seen.add(obj.id)
            if isinstance(obj, h5py.Group):
                walk(obj, f"{prefix}{n}/")
            elif obj.dtype.kind in "fiu" and obj.ndim >= 1:
                out.append(f"{prefix}{n}")

    walk(f["/"], "")
    return out, tracked


def _h5_listing(cols: list[str], tracked: dict[str, bool]) -> str:
    """Which order the groups holding ``cols`` list their datasets in."""
    kinds = {tracked.get(c.rsplit("/", 1)[0] + "/" if "/" in c else "", False) for c in cols}
    if kinds == {True}:
        return "HDF5 creation order"
    if kinds == {False}:
        return "name order, numbers compared as numbers: the file does not track creation order"
    return "HDF5 creation order where the file tracks it, else name order, numbers as numbers"


class Hdf5Source(_SceneSource):
    @classmethod
    def open(cls, path: Path, n_inputs: int, inputs=None, model_names=None) -> Hdf5Source:
        import h5py

        try:
            with _FILE_LOCK:
                f = h5py.File(path, "r")
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{path}: cannot read HDF5: {' '.join(str(e).split())}") from None
        try:
            available, tracked = _h5_datasets(f)
            cols = _choose(
                available, [s.strip("/") for s in _split_names(inputs) or []] or None,
                n_inputs, model_names, path=path, what="dataset",
            )  # fmt: skip
            shape = tuple(f[cols[0]].shape)
            for c in cols[1:]:
                if tuple(f[c].shape) != shape:
                    raise UserError(
                        f"{path}: dataset {c!r} has shape {tuple(f[c].shape)} but {cols[0]!r} "
                        f"has {shape}; the model's inputs must be datasets of one shape"
                    )
        except BaseException:
            f.close()
            raise
        order = order_note(inputs, model_names, cols, _h5_listing(cols, tracked))
        src = cls(path, "hdf5", int(np.prod(shape)), cols, shape, order=order)
        src.extra["file"] = f
        return src

    def _read_var(self, name, a, b):
        d = self.extra["file"][name]
        x = np.asarray(d[a:b], dtype=np.float64 if "scale_factor" in d.attrs else np.float32)
        fill = d.attrs.get("_FillValue", d.attrs.get("missing_value"))
        bad = None
        if fill is not None:
            bad = np.isin(x, np.atleast_1d(fill).astype(x.dtype))
        if "scale_factor" in d.attrs or "add_offset" in d.attrs:
            x = x * float(np.ravel(d.attrs.get("scale_factor", 1.0))[0]) + float(
                np.ravel(d.attrs.get("add_offset", 0.0))[0]
            )
        x = x.astype(np.float32, copy=False)
        if bad is not None and bad.any():
            x[bad] = np.nan
        return x

    def close(self):
        f = self.extra.pop("file", None)
        if f is not None:
            with _FILE_LOCK:
                f.close()


_SOURCES = {
    "npy": NpySource, "csv": CsvSource, "parquet": ParquetSource,
    "netcdf": NetcdfSource, "hdf5": Hdf5Source,
}  # fmt: skip


def open_source(path, n_inputs: int, inputs=None, model_names=None) -> Source:
    """Open ``path`` and choose the model's ``n_inputs`` inputs in it (validated here,
    before any output exists)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not an input file; for the files in it pass '{path}/*'")
    kind = kind_of(path)
    if not path.is_file():
        raise UserError(f"input file not found: {path}")
    source = _SOURCES[kind].open(path, n_inputs, inputs, model_names)
    if source.n_rows == 0:
        source.close()
        raise UserError(
            f"{path}: no data rows"
            + (" (only a header)" if kind == "csv" else "")
            + "; nothing to predict"
        )
    return source


# ----------------------------------------------------------------------------- sinks


class Sink:
    """Writes blocks of outputs ``write(start, y)`` (``y``: float32 ``(rows, n_out)``)."""

    def write(self, start: int, y: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass


class NpySink(Sink):
    """Writes the ``.npy`` header, then each block in order with plain file writes (about
    10x faster than filling a memory map of a new file page by page)."""

    def __init__(self, tmp: Path, source: Source, names: list[str], dtype=np.float32):
        self.shape = (source.n_rows, len(names))
        self.dtype = np.dtype(dtype)
        self.f = open(tmp, "wb")  # noqa: SIM115 - written block by block, closed in close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": self.shape}  # fmt: skip
        np.lib.format.write_array_header_1_0(self.f, header)
        self.next = 0

    def write(self, start, y):
        if start != self.next:
            raise RuntimeError(f"npy blocks out of order: row {start}, expected {self.next}")
        self.f.write(np.ascontiguousarray(y, dtype=self.dtype).data)
        self.next += len(y)

    def close(self):
        self.f.close()
        if self.next != self.shape[0]:
            raise RuntimeError(f"wrote {self.next} rows of {self.shape[0]}")


class CsvSink(Sink):
    def __init__(self, tmp: Path, source: Source, names: list[str], dtype=np.float32):
        import csv

        self.names = names
        self.f = open(tmp, "w", newline="")  # noqa: SIM115 - closed in close()
        csv.writer(self.f).writerow(names)

    def write(self, start, y):
        import pandas as pd

        # each value written as the shortest text that reads back to the same float32/64
        pd.DataFrame(y, columns=self.names, copy=False).to_csv(self.f, header=False, index=False)

    def close(self):
        self.f.close()


class ParquetSink(Sink):
    def __init__(self, tmp: Path, source: Source, names: list[str], dtype=np.float32):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.names = names
        self.schema = pa.schema([(n, pa.from_numpy_dtype(np.dtype(dtype))) for n in names])
        self.w = pq.ParquetWriter(tmp, self.schema)

    def write(self, start, y):
        import pyarrow as pa

        self.w.write_table(
            pa.Table.from_arrays([pa.array(y[:, j]) for j in range(y.shape[1])], schema=self.schema)
        )

    def close(self):
        self.w.close()


def _scene_lines(source: Source, start: int, y: np.ndarray) -> tuple[int, int, tuple]:
    per_line = int(np.prod(source.shape[1:])) if len(source.shape) > 1 else 1
    a = start // per_line
    b = a + len(y) // per_line
    return a, b, (b - a, *source.shape[1:])


class _SceneSink(Sink):
    """A copy of the input scene file, open as ``self.handle``, with one array per output in
    ``self.targets`` (of the first input's shape): each block is written back as whole
    lines of the scene."""

    source: Source
    handle: Any
    targets: list

    def write(self, start, y):
        a, b, shape = _scene_lines(self.source, start, y)
        with _FILE_LOCK:
            for j, target in enumerate(self.targets):
                target[a:b] = y[:, j].reshape(shape)

    def close(self):
        with _FILE_LOCK:
            self.handle.close()


class NetcdfSink(_SceneSink):
    """Copies the input file and adds one variable per output, dims of the first input."""

    def __init__(self, tmp: Path, source: NetcdfSource, names: list[str], attrs: dict, dtype=np.float32):
        import netCDF4

        self.source = source
        shutil.copyfile(source.path, tmp)
        g, v = _nc_split(source.columns[0])
        with _FILE_LOCK:
            self.handle = nc = netCDF4.Dataset(tmp, "a")
            try:
                grp = nc[g] if g else nc
                like = grp.variables[v]
                opts: dict = {}
                filt = like.filters() or {}
                if filt.get("zlib"):
                    opts.update(zlib=True, complevel=filt.get("complevel", 4))
                chunking = like.chunking()
                if isinstance(chunking, list) and nc.data_model.startswith("NETCDF4"):
                    opts["chunksizes"] = chunking
                self.targets = []
                for name in names:
                    var = grp.createVariable(
                        name, np.dtype(dtype), like.dimensions, fill_value=np.nan, **opts
                    )
                    var.setncatts({**attrs, "long_name": name})
                    self.targets.append(var)
            except BaseException:
                nc.close()
                raise


class Hdf5Sink(_SceneSink):
    """Copies the input file and adds one dataset per output beside the first input."""

    def __init__(self, tmp: Path, source: Hdf5Source, names: list[str], attrs: dict, dtype=np.float32):
        import h5py

        self.source = source
        shutil.copyfile(source.path, tmp)
        with _FILE_LOCK:
            self.handle = f = h5py.File(tmp, "a")
            try:
                like = f[source.columns[0]]
                parent = like.parent
                self.targets = []
                for name in names:
                    if name in parent:
                        raise UserError(
                            f"{source.path}: {parent.name.rstrip('/')}/{name} already exists; "
                            "pass --outputs with other names"
                        )
                    d = parent.create_dataset(
                        name, shape=like.shape, dtype=dtype, chunks=like.chunks,
                        compression=like.compression, compression_opts=like.compression_opts,
                        fillvalue=np.nan,
                    )  # fmt: skip
                    for k, v in attrs.items():
                        d.attrs[k] = v
                    d.attrs["long_name"] = name
                    self.targets.append(d)
            except BaseException:
                f.close()
                raise


def open_sink(
    tmp: Path, out_kind: str, source: Source, names: list[str], attrs: dict, dtype=np.float32
) -> Sink:
    """A writer of the ``names`` outputs (of ``dtype``) of ``source``'s rows into the
    temporary file ``tmp`` (:func:`prepare` has checked that a scene's output is of the
    input's own kind)."""
    if out_kind == "netcdf":
        return NetcdfSink(tmp, source, names, attrs, dtype)
    if out_kind == "hdf5":
        return Hdf5Sink(tmp, source, names, attrs, dtype)
    sink = {"npy": NpySink, "csv": CsvSink, "parquet": ParquetSink}[out_kind]
    return sink(tmp, source, names, dtype)


# ------------------------------------------------------------------------ one file


def load_model_for_predict(path: str | os.PathLike):
    """Load a saved Keras model (``.keras``, ``.h5``) for inference; a legacy network file
    (OC-SMART, ffbp, raw HDF5) is refused with the import command to run first."""
    from mlnnkit.models import load_model

    path = Path(path)
    if path.is_file() and path.suffix.lower() != ".keras":
        from mlnnkit.legacy import detect_format

        try:
            fmt = detect_format(path)
        except UserError:
            fmt = None
        if fmt in ("ocsmart", "ffbp", "rawh5"):
            raise UserError(
                f"{path} is a {fmt} network file, not a Keras model: import it first "
                f"(`mlnnkit import {path} -o net.keras`, which verifies it), then predict "
                "with net.keras"
            )
    return load_model(path, compile=False)


def output_names(model, outputs, n_out: int, *, where: str = "") -> list[str]:
    """The output names: ``outputs`` (comma list) or the model's, else ``prediction``
    (one output) or ``prediction_1`` ... ``prediction_N``."""
    given = _split_names(outputs)
    if given is not None:
        if len(given) != n_out:
            raise UserError(f"{where}--outputs names {len(given)} outputs but the model has {n_out}")
        return given
    _, names = model_io_names(model)
    if names and len(names) == n_out:
        return names
    return ["prediction"] if n_out == 1 else [f"prediction_{i + 1}" for i in range(n_out)]


def model_io_sizes(model) -> tuple[int, int]:
    """``(n_inputs, n_outputs)`` of a model taking and giving rows of numbers."""
    inputs = getattr(model, "inputs", None)
    outputs = getattr(model, "outputs", None)
    if not inputs or not outputs:
        raise UserError("the model has no defined input shape; save it after building it")
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(
            f"mlnnkit predict takes models with one input and one output tensor "
            f"(this one has {len(inputs)} and {len(outputs)}); use mlnnkit.predict_array"
        )
    ishape, oshape = tuple(inputs[0].shape[1:]), tuple(outputs[0].shape[1:])
    if len(ishape) != 1 or len(oshape) > 1:
        raise UserError(
            f"mlnnkit predict takes models whose samples are rows of numbers; this one maps "
            f"{ishape} to {oshape} (use mlnnkit.predict_array)"
        )
    return int(ishape[0]), int(oshape[0]) if oshape else 1


@dataclass
class FileResult:
    """What predicting one file did."""

    input: Path
    output: Path
    rows: int
    masked_rows: int
    seconds: float
    error: str | None = None


def check_outputs_free(source: Source, names: list[str]) -> None:
    """Refuse output names that already exist as variables of a scene file."""
    if source.kind == "netcdf":
        g, _ = _nc_split(source.columns[0])
        existing = set(source.extra["datasets"][g].variables)
        clash = [n for n in names if n in existing]
    elif source.kind == "hdf5":
        parent = source.extra["file"][source.columns[0]].parent
        clash = [n for n in names if n in parent]
    else:
        return
    if clash:
        raise UserError(
            f"{source.path}: variable {clash[0]!r} already exists in the file; pass --outputs "
            "with other names"
        )


def prepare(model, input_path, output_path, *, inputs=None, outputs=None):
    """Open and validate one job: ``(source, output names, output kind, attrs)``."""
    check_not_an_input(output_path, [input_path])
    n_in, n_out = model_io_sizes(model)
    out_kind = kind_of(output_path)
    model_in, _ = model_io_names(model)
    source = open_source(input_path, n_in, inputs, model_in)
    try:
        names = output_names(model, outputs, n_out, where=f"{input_path}: ")
        check_outputs_free(source, names)
        if out_kind in ("netcdf", "hdf5") and source.kind != out_kind:
            raise UserError(
                f"{input_path}: outputs go into a copy of the input file, so the output must "
                f"be {source.kind} too (not {out_kind}); or choose a .npy, .csv or .parquet output"
            )
    except BaseException:
        source.close()
        raise
    attrs = {
        "source": "mlnnkit predict",
        "mlnnkit_model": str(getattr(model, "name", "model")),
        "mlnnkit_inputs": ",".join(source.columns),
    }
    return source, names, out_kind, attrs


def predict_file(
    model,
    input_path,
    output_path,
    *,
    inputs=None,
    outputs=None,
    chunk_rows: int | None = None,
    block_rows: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_open: Callable[[Source], None] | None = None,
) -> FileResult:
    """Predict ``model`` on the inputs in ``input_path`` and write ``output_path``
    (atomically), block by block with bounded memory.

    Args:
        model: a ``keras.Model`` from rows of inputs to rows of outputs.
        input_path: ``.npy``, ``.csv``, ``.parquet``, NetCDF or HDF5 file.
        output_path: where to write; its suffix picks the kind (a scene's outputs go into
            a copy of the input file, so NetCDF -> NetCDF, HDF5 -> HDF5).
        inputs: names (comma list or globs) of the columns or variables that are the
            model's inputs, in the model's order; default: the model's own input names,
            else every column/variable when their number fits.
        outputs: names for the outputs; default: the model's own, else ``prediction``.
        chunk_rows: rows per compiled call (default: from the model's size).
        block_rows: rows read and written at a time (default: about 32 MB of data).
        progress: called with the number of rows finished, chunk by chunk.
        on_open: called with the opened source before the work starts (e.g. to size a
            progress bar from ``source.n_rows``).
    """
    from mlnnkit.predict import compute_dtype, predict_stream

    t0 = time.perf_counter()
    output_path = Path(output_path)
    source, names, out_kind, attrs = prepare(
        model, input_path, output_path, inputs=inputs, outputs=outputs
    )
    masked = 0

    try:
        if on_open is not None:
            on_open(source)
        with _atomic.atomic_path(output_path) as tmp:
            sink = open_sink(tmp, out_kind, source, names, attrs, compute_dtype(model))
            try:

                def write(start, y):
                    nonlocal masked
                    y = y.reshape(len(y), -1)
                    masked += int(np.isnan(y[:, 0]).sum())  # masked rows are NaN throughout
                    sink.write(start, y)

                rows = predict_stream(
                    model, source.blocks(block_rows), write,
                    chunk_rows=chunk_rows, workers=workers, progress=progress,
                )  # fmt: skip
            finally:
                sink.close()
    finally:
        source.close()
    return FileResult(Path(input_path), output_path, rows, masked, time.perf_counter() - t0)


# ------------------------------------------------------------------------ many files


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: the same path once resolved (symlinks,
    ``..``), or, when both exist, the same inode (hard links; :func:`os.path.samefile`)."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_not_an_input(output: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse an ``output`` that is one of the ``inputs`` (or the same file under another
    name): predictions never replace the data they come from."""
    for src in inputs:
        if same_file(output, src):
            shown = f"{output}" if Path(output) == Path(src) else f"{output} (the same file as {src})"
            raise UserError(
                f"output {shown} is an input: writing it would replace the input's data; "
                "choose another -o"
            )


def plan_jobs(inputs: Sequence[str], output: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Pair every input file (globs expanded, e.g. ``'scenes/*.nc'``) with its output.

    One input and an output that is not a directory: that file. Several inputs, or an
    output that is an existing directory or ends with ``/``: ``output/<input name>``.
    """
    files: list[Path] = []
    for item in inputs:
        item = str(item)
        if any(ch in item for ch in "*?["):
            hits = sorted(glob.glob(item))
            if not hits:
                raise UserError(f"no input file matches {item!r}")
            files += [Path(h) for h in hits if Path(h).is_file()]
        else:
            if Path(item).is_dir():
                raise UserError(
                    f"{item} is a folder, not an input file; for the files in it pass '{item}/*'"
                )
            files.append(Path(item))
    if not files:
        raise UserError("no input files given")
    out = str(output)
    to_dir = len(files) > 1 or out.endswith(("/", os.sep)) or Path(out).is_dir()
    if not to_dir:
        check_not_an_input(out, files)
        return [(files[0], Path(out))]
    outdir = Path(out)
    if not outdir.is_dir() and not out.endswith(("/", os.sep)) and outdir.suffix.lower() in KINDS:
        raise UserError(
            f"{len(files)} input files need an output folder, but -o {out} names a "
            f"{outdir.suffix} file: give a folder (e.g. -o {outdir.with_suffix('')}/), or one input"
        )
    pairs = [(f, outdir / f.name) for f in files]
    seen: dict[Path, Path] = {}
    for f, o in pairs:
        if o in seen:
            raise UserError(f"{f} and {seen[o]} would both write {o}; give them different names")
        if same_file(o, f):
            raise UserError(
                f"{f}: the output folder {outdir} is the input's own, so its output {o} "
                "would replace it; choose another -o"
            )
        check_not_an_input(o, files)
        seen[o] = f
    return pairs


def error_text(e: BaseException) -> str:
    """One line for a failed file: a user error's own message, else the exception's."""
    if isinstance(e, UserError):
        return " ".join(str(e).split())
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def predict_files(
    model,
    jobs: Sequence[tuple[Path, Path]],
    *,
    inputs=None,
    outputs=None,
    chunk_rows: int | None = None,
    block_rows: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_open: Callable[[Source], None] | None = None,
    on_done: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """:func:`predict_file` for every ``(input, output)`` job in turn; a file that fails
    is reported in its :class:`FileResult` (``error``) and the others still run.
    ``on_done`` is called with each file's result as soon as it is finished."""
    results = []
    for src, dst in jobs:
        try:
            r = predict_file(
                model, src, dst, inputs=inputs, outputs=outputs, chunk_rows=chunk_rows,
                block_rows=block_rows, workers=workers, progress=progress, on_open=on_open,
            )  # fmt: skip
        except (UserError, OSError, ValueError, RuntimeError) as e:
            r = FileResult(Path(src), Path(dst), 0, 0, 0.0, error=error_text(e))
        results.append(r)
        if on_done is not None:
            on_done(r)
    return results
