"""NetCDF scenes for ``mlnnkit predict``: variables read with xarray (fill values and
``scale_factor`` decoded, masked pixels NaN; ``group/name`` reaches variables in groups),
outputs written with netCDF4 into a copy of the input file, dims of the first input."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlnnkit.errors import UserError
from mlnnkit.predict._base import (
    _FILE_LOCK,
    _choose,
    _SceneSink,
    _SceneSource,
    _split_names,
    order_note,
)

NAME = "netcdf"
SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf")
SCENE = True  # outputs go into a copy of the input file


def _nc_split(name: str) -> tuple[str | None, str]:
    name = name.strip("/")
    if "/" in name:
        g, v = name.rsplit("/", 1)
        return g, v
    return None, name


@dataclass
class NetcdfSource(_SceneSource):
    datasets: dict = field(default_factory=dict, repr=False)  # group (None: root) -> xr.Dataset
    dims: tuple = ()  # dimensions of the first input

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
        return cls(
            path, "netcdf", int(np.prod(shape)) if shape else 1, cols, shape,
            datasets=datasets, dims=first[1],
            order=order_note(inputs, model_names, cols, "the file's variable order"),
        )  # fmt: skip

    def _read_var(self, name, a, b):
        g, v = _nc_split(name)
        da = self.datasets[g][v]
        if not da.ndim:
            return np.asarray(da.values, np.float32)
        return np.asarray(da[a:b].values, dtype=np.float32)

    def clashes(self, names):
        g, _ = _nc_split(self.columns[0])
        existing = set(self.datasets[g].variables)
        return [n for n in names if n in existing]

    def close(self):
        with _FILE_LOCK:
            for ds in self.datasets.values():
                ds.close()
        self.datasets = {}


class NetcdfSink(_SceneSink):
    """Copies the input file and adds one variable per output, dims of the first input."""

    def __init__(self, tmp: Path, source: NetcdfSource, names: list[str], attrs: dict, dtype=np.float32,
                 flags: dict | None = None):  # fmt: skip
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
                if flags is not None:
                    from mlnnkit.retrieval import FLAG_NAME

                    # CF flags: unsigned byte in NetCDF-4, (signed) byte in NetCDF-3
                    kind = "u1" if nc.data_model.startswith("NETCDF4") and nc.data_model != "NETCDF4_CLASSIC" else "i1"
                    var = grp.createVariable(FLAG_NAME, kind, like.dimensions, fill_value=False, **opts)
                    var.setncatts({**attrs, **flags, "flag_masks": flags["flag_masks"].astype(kind)})
                    self.flag_target = var
            except BaseException:
                nc.close()
                raise


SOURCE = NetcdfSource
SINK = NetcdfSink
