"""``.csv`` tables for ``mlnnkit predict``: columns chosen by name, read with pandas in
chunks (one Dask task per file: a CSV cannot seek to a row)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlnnkit.errors import UserError
from mlnnkit.predict._base import Sink, Source, _block_rows, _choose, order_note

NAME = "csv"
SUFFIXES = (".csv",)
SCENE = False


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


class CsvSink(Sink):
    def __init__(self, tmp: Path, source: Source, names: list[str], attrs: dict, dtype=np.float32,
                 flags: dict | None = None):  # fmt: skip
        import csv

        from mlnnkit.retrieval import FLAG_NAME

        self.names = names
        self.flags = flags is not None
        self.f = open(tmp, "w", newline="")  # noqa: SIM115 - closed in close()
        csv.writer(self.f).writerow([*names, FLAG_NAME] if self.flags else names)

    def write(self, start, y, flags=None):
        import pandas as pd

        from mlnnkit.retrieval import FLAG_NAME

        # each value written as the shortest text that reads back to the same float32/64
        df = pd.DataFrame(y, columns=self.names, copy=False)
        if self.flags:
            df[FLAG_NAME] = flags
        df.to_csv(self.f, header=False, index=False)

    def close(self):
        self.f.close()


SOURCE = CsvSource
SINK = CsvSink
