"""Tables with named columns: ``.csv``, ``.parquet`` and ``.npz``.

Columns are chosen by a list, a comma list, or glob patterns (``Rrs_*``), kept in the
file's order. In an ``.npz`` every array is a column (1-D) or a block of columns (2-D,
named ``name[0]``, ``name[1]``, ... and selectable as a whole by its name).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np

from mlnnkit.data import Dataset
from mlnnkit.errors import UserError


def read_table(path: str | Path):
    """Read a table into a pandas DataFrame (npz arrays become columns).

    A folder, an unsupported suffix, an unreadable file or a table without data rows
    (e.g. a CSV of only its header) is a :class:`UserError` naming ``path``.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a data file (give a .csv, .parquet or .npz)")
    df = _read_table(path)
    if len(df) == 0:
        raise UserError(
            f"{path}: no data rows"
            + (f" (only the header: {', '.join(map(str, df.columns[:8]))})" if len(df.columns) else "")
        )
    return df


def _read_table(path: Path):
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix == ".npz":
            cols: dict[str, np.ndarray] = {}
            with np.load(path, allow_pickle=False) as f:
                for k in f.files:
                    a = f[k]
                    if a.ndim == 1:
                        cols[k] = a
                    elif a.ndim == 2:
                        for j in range(a.shape[1]):
                            cols[f"{k}[{j}]"] = a[:, j]
                    else:
                        raise UserError(f"{path}: array {k!r} has {a.ndim} dimensions (1 or 2 allowed)")
            lengths = {len(v) for v in cols.values()}
            if len(lengths) > 1:
                raise UserError(f"{path}: arrays have different numbers of rows {sorted(lengths)}")
            return pd.DataFrame(cols)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - parser errors of pandas/pyarrow/numpy
        raise UserError(f"{path}: cannot read {suffix[1:]} table: {' '.join(str(e).split())}") from None
    raise UserError(f"{path}: unsupported table type {suffix!r} (use .csv, .parquet or .npz)")


def select_columns(columns, spec: list[str] | str, *, what: str = "columns", where: str = "") -> list[str]:
    """Resolve a column spec (list, comma list, globs, npz block names) against ``columns``."""
    columns = [str(c) for c in columns]
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [s for s in items if s]
    if not items:
        raise UserError(f"{where}{what}: no columns given")
    chosen: list[str] = []
    for item in items:
        if item in columns:
            hits = [item]
        elif any(ch in item for ch in "*?["):
            hits = [c for c in columns if fnmatch.fnmatchcase(c, item)]
        else:
            hits = [c for c in columns if c.startswith(item + "[")]  # npz 2-D block
        if not hits:
            shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
            raise UserError(f"{where}{what}: no column matches {item!r} (columns: {shown})")
        if any(ch in item for ch in "*?["):
            hits = [c for c in columns if c in hits]  # file order
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def to_arrays(df, features, targets, *, where: str = "") -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    fcols = select_columns(df.columns, features, what="features", where=where)
    tcols = select_columns(df.columns, targets, what="targets", where=where)
    try:
        x = df[fcols].to_numpy("float32")
        y = df[tcols].to_numpy("float32")
    except (ValueError, TypeError) as e:
        raise UserError(f"{where}non-numeric values in the chosen columns: {e}") from None
    return x, y, fcols, tcols


def load(src, seed: int = 0, base_dir: Path = Path("."), split: bool = True) -> Dataset:
    """Load a table source; split off ``test_fraction`` at random (seeded) unless a
    ``test_path`` is given or ``split`` is False."""
    path = src.path if Path(src.path).is_absolute() else Path(base_dir) / src.path
    where = f"{path}: "
    df = read_table(path)
    x, y, fcols, tcols = to_arrays(df, src.features, src.targets, where=where)
    bad = ~(np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1))
    if bad.any():
        x, y = x[~bad], y[~bad]
    if len(x) == 0:
        raise UserError(f"{where}no rows with finite values in the chosen columns")
    if not split:
        x_test, y_test = x[:0], y[:0]
        x_train, y_train = x, y
    elif src.test_path is not None:
        tpath = src.test_path if Path(src.test_path).is_absolute() else Path(base_dir) / src.test_path
        x_test, y_test, _, _ = to_arrays(read_table(tpath), fcols, tcols, where=f"{tpath}: ")
        x_train, y_train = x, y
    else:
        order = np.random.default_rng(seed).permutation(len(x))
        n_test = round(len(x) * src.test_fraction)
        if src.test_fraction > 0 and (n_test < 1 or n_test >= len(x)):
            raise UserError(
                f"{where}{len(x)} rows are too few to hold out test_fraction={src.test_fraction}"
            )
        x_test, y_test = x[order[:n_test]], y[order[:n_test]]
        x_train, y_train = x[order[n_test:]], y[order[n_test:]]
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        feature_names=fcols,
        target_names=tcols,
        description=str(path.name),
        meta={"dropped_nonfinite_rows": int(bad.sum())},
    )
