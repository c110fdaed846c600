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
from mlnnkit.predict._base import (
    _FILE_LOCK,
    _choose,
    _SceneSink,
    _SceneSource,
    _split_names,
    natural_key,
    order_note,
)

NAME = "hdf5"
SUFFIXES = (".h5", ".hdf5", ".he5")
SCENE = True  # outputs go into a copy of the input file


def _datasets(f) -> tuple[list[str], dict[str, bool]]:
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


def _listing(cols: list[str], tracked: dict[str, bool]) -> str:
    """Which order the groups holding ``cols`` list their datasets in."""
    kinds = {tracked.get(c.rsplit("/", 1)[0] + "/" if "/" in c else "", False) for c in cols}
    if kinds == {True}:
        return "HDF5 creation order"
    if kinds == {False}:
        return "name order, numbers compared as numbers: the file does not track creation order"
    return "HDF5 creation order where the file tracks it, else name order, numbers as numbers"


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
            available, tracked = _datasets(f)
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
        order = order_note(inputs, model_names, cols, _listing(cols, tracked))
        return cls(path, "hdf5", int(np.prod(shape)), cols, shape, file=f, order=order)

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
