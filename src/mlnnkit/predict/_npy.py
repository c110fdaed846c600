"""``.npy`` files for ``mlnnkit predict``: read memory-mapped (columns = the model's
inputs in order), written header first, then block by block."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlnnkit.errors import UserError
from mlnnkit.predict._base import Sink, Source

NAME = "npy"
SUFFIXES = (".npy",)
SCENE = False  # a table: outputs go into a new file of any table kind


@dataclass
class NpySource(Source):
    array: np.ndarray | None = field(default=None, repr=False)  # the memory map

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
        return cls(path, "npy", int(x.shape[0]), cols, array=x, order="the array's column order")

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]  # a view of the map: cast chunk by chunk

    def close(self) -> None:
        self.array = None


def _npy_writer(path: Path, shape: tuple, dtype):
    f = open(path, "wb")  # noqa: SIM115 - written block by block, closed by the sink
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": shape}  # fmt: skip
    np.lib.format.write_array_header_1_0(f, header)
    return f


class NpySink(Sink):
    """Writes the ``.npy`` header, then each block in order with plain file writes (about
    10x faster than filling a memory map of a new file page by page). With flags, the
    ``uint8`` flags go to a sibling file (``OUT.flags.npy``, shape ``(rows,)``)."""

    FLAGS_SIBLING = True

    def __init__(self, tmp: Path, source: Source, names: list[str], attrs: dict, dtype=np.float32,
                 flags: dict | None = None, flags_path: Path | None = None):  # fmt: skip
        self.shape = (source.n_rows, len(names))
        self.dtype = np.dtype(dtype)
        self.f = _npy_writer(tmp, self.shape, self.dtype)
        self.ff = _npy_writer(flags_path, (source.n_rows,), np.uint8) if flags is not None else None
        self.next = 0

    def write(self, start, y, flags=None):
        if start != self.next:
            raise RuntimeError(f"npy blocks out of order: row {start}, expected {self.next}")
        self.f.write(np.ascontiguousarray(y, dtype=self.dtype).data)
        if self.ff is not None:
            self.ff.write(np.ascontiguousarray(flags, dtype=np.uint8).data)
        self.next += len(y)

    def close(self):
        self.f.close()
        if self.ff is not None:
            self.ff.close()
        if self.next != self.shape[0]:
            raise RuntimeError(f"wrote {self.next} rows of {self.shape[0]}")


SOURCE = NpySource
SINK = NpySink
