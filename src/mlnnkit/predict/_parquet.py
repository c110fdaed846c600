"""Parquet tables for ``mlnnkit predict``: columns chosen by name, one Dask task per
row group."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlnnkit.errors import UserError
from mlnnkit.predict._base import Sink, Source, _block_rows, _choose, order_note

NAME = "parquet"
SUFFIXES = (".parquet", ".pq")
SCENE = False


@dataclass
class ParquetSource(Source):
    groups: np.ndarray | None = field(default=None, repr=False)  # row-group bounds

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
        return cls(path, "parquet", int(meta.num_rows), cols, groups=bounds, order=order)

    def _table_to_array(self, table) -> np.ndarray:
        cols = [table.column(c).to_numpy(zero_copy_only=False) for c in self.columns]
        return np.column_stack([np.asarray(c, dtype=np.float32) for c in cols]) if cols else None

    def ranges(self, block_rows=None):
        g = self.groups
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

        g = self.groups
        first = int(np.searchsorted(g, start, side="right") - 1)
        last = int(np.searchsorted(g, stop, side="left"))
        pf = pq.ParquetFile(self.path)
        table = pf.read_row_groups(list(range(first, last)), columns=self.columns)
        return self._table_to_array(table.slice(start - int(g[first]), stop - start))


class ParquetSink(Sink):
    def __init__(self, tmp: Path, source: Source, names: list[str], attrs: dict, dtype=np.float32,
                 flags: dict | None = None):  # fmt: skip
        import pyarrow as pa
        import pyarrow.parquet as pq

        from mlnnkit.retrieval import FLAG_NAME

        self.names = names
        fields = [pa.field(n, pa.from_numpy_dtype(np.dtype(dtype))) for n in names]
        self.flags = flags is not None
        if self.flags:
            meta = {"flag_masks": " ".join(map(str, flags["flag_masks"].tolist())),
                    "flag_meanings": flags["flag_meanings"]}  # fmt: skip
            fields.append(pa.field(FLAG_NAME, pa.uint8(), metadata=meta))
        self.schema = pa.schema(fields)
        self.w = pq.ParquetWriter(tmp, self.schema)

    def write(self, start, y, flags=None):
        import pyarrow as pa

        cols = [pa.array(y[:, j]) for j in range(y.shape[1])]
        if self.flags:
            cols.append(pa.array(np.asarray(flags, np.uint8)))
        self.w.write_table(pa.Table.from_arrays(cols, schema=self.schema))

    def close(self):
        self.w.close()


SOURCE = ParquetSource
SINK = ParquetSink
