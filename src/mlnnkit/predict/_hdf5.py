"""HDF5 scenes for ``mlnnkit predict``: datasets read with h5py (names are dataset paths;
``_FillValue``/``missing_value`` become NaN, ``scale_factor``/``add_offset`` applied),
outputs written into a copy of the input file beside the first input."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlnnkit.errors import UserError
from mlnnkit.predict._base import _FILE_LOCK, _choose, _SceneSink, _SceneSource, _split_names

NAME = "hdf5"
SUFFIXES = (".h5", ".hdf5", ".he5")
SCENE = True  # outputs go into a copy of the input file


@dataclass
class Hdf5Source(_SceneSource):
    file: Any = field(default=None, repr=False)  # the open h5py.File

    @classmethod
    def open(cls, path: Path, n_inputs: int, inputs=None, model_names=None) -> Hdf5Source:
        import h5py

        try:
            with _FILE_LOCK:
                f = h5py.File(path, "r")
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{path}: cannot read HDF5: {' '.join(str(e).split())}") from None
        try:
            available: list[str] = []
            f.visititems(
                lambda n, o: available.append(n)
                if isinstance(o, h5py.Dataset) and o.dtype.kind in "fiu" and o.ndim >= 1
                else None
            )
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
        return cls(path, "hdf5", int(np.prod(shape)), cols, shape, file=f)

    def _read_var(self, name, a, b):
        d = self.file[name]
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

    def clashes(self, names):
        parent = self.file[self.columns[0]].parent
        return [n for n in names if n in parent]

    def close(self):
        f, self.file = self.file, None
        if f is not None:
            with _FILE_LOCK:
                f.close()


class Hdf5Sink(_SceneSink):
    """Copies the input file and adds one dataset per output beside the first input."""

    def __init__(self, tmp: Path, source: Hdf5Source, names: list[str], attrs: dict, dtype=np.float32,
                 flags: dict | None = None):  # fmt: skip
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
                if flags is not None:
                    from mlnnkit.retrieval import FLAG_NAME

                    d = parent.create_dataset(
                        FLAG_NAME, shape=like.shape, dtype=np.uint8, chunks=like.chunks,
                        compression=like.compression, compression_opts=like.compression_opts,
                    )  # fmt: skip
                    for k, v in {**attrs, **flags}.items():
                        d.attrs[k] = v
                    self.flag_target = d
            except BaseException:
                f.close()
                raise


SOURCE = Hdf5Source
SINK = Hdf5Sink
