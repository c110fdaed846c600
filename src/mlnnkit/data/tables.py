"""Tables with named columns: ``.csv``, ``.parquet`` and ``.npz`` -- the package's one
table reader (:func:`read_table`), for run configs (:func:`load`) and for fine-tuning
rows checked against a model's shapes (:func:`read_xy`).

Columns are chosen by a list, a comma list, or glob patterns (``Rrs_*``), kept in the
file's order. In an ``.npz`` every array is a column (1-D) or a block of columns (2-D,
named ``name[0]``, ``name[1]``, ... and selectable as a whole by its name).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from mlnnkit.data._base import Dataset, SourceConfig
from mlnnkit.data.rows import drop_nonfinite, split_rows
from mlnnkit.errors import UserError


class TableSource(SourceConfig):
    """A table with named feature and target columns: csv, parquet, or npz arrays."""

    source: Literal["csv", "npz", "parquet"]
    path: Path
    features: list[str] | str = Field(
        description="Feature columns: a list, a comma list, or a glob such as 'Rrs_*'."
    )
    targets: list[str] | str = Field(description="Target columns, like `features`.")
    test_fraction: float = Field(0.2, ge=0, lt=1)
    test_path: Path | None = Field(
        None, description="A separate test table (then test_fraction is ignored)."
    )


CONFIG = TableSource  # this source's part of the run config


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


def match_columns(columns: Sequence[str], items: Sequence[str], *, blocks: bool = False) -> list[str]:
    """The ``columns`` that ``items`` name, each once, in the order of ``items``; a glob
    item (``Rrs_*``) gives its matches in the order of ``columns`` (the file's order).

    Args:
        columns: the available names, in the file's order.
        items: names or glob patterns (``*``, ``?``, ``[...]``).
        blocks: also match ``name`` to the columns ``name[0]``, ``name[1]``, ... of a 2-D
            npz array (default False).

    Raises:
        LookupError: with the first item that matches nothing as its argument.

    Example:
        >>> match_columns(["Rrs_412", "Rrs_443", "chl"], ["chl", "Rrs_*"])
        ['chl', 'Rrs_412', 'Rrs_443']
    """
    chosen: list[str] = []
    for item in items:
        if item in columns:
            hits = [item]
        elif any(ch in item for ch in "*?["):
            hits = [c for c in columns if fnmatch.fnmatchcase(c, item)]
        elif blocks:
            hits = [c for c in columns if c.startswith(item + "[")]  # npz 2-D block
        else:
            hits = []
        if not hits:
            raise LookupError(item)
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def select_columns(columns, spec: list[str] | str, *, what: str = "columns", where: str = "") -> list[str]:
    """Resolve a column spec (list, comma list, globs, npz block names) against ``columns``."""
    columns = [str(c) for c in columns]
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [s for s in items if s]
    if not items:
        raise UserError(f"{where}{what}: no columns given")
    try:
        return match_columns(columns, items, blocks=True)
    except LookupError as e:
        shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
        raise UserError(f"{where}{what}: no column matches {e.args[0]!r} (columns: {shown})") from None


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
    x, y, n_bad = drop_nonfinite(x, y)  # config tables: dropped silently, counted
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
        tr, _, te = split_rows(
            len(x), src.test_fraction, 0.0, seed, where=where, names=("test_fraction", "val_fraction")
        )
        x_test, y_test = x[te], y[te]
        x_train, y_train = x[tr], y[tr]
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        feature_names=fcols,
        target_names=tcols,
        description=str(path.name),
        meta={"dropped_nonfinite_rows": n_bad},
    )


@dataclass
class TableData:
    """Rows of inputs ``x`` and targets ``y`` with their column names."""

    x: np.ndarray
    y: np.ndarray
    input_names: list[str]
    target_names: list[str]
    n_dropped: int = 0


def read_xy(
    path: str | Path,
    in_shape: tuple,
    out_shape: tuple,
    *,
    known_inputs: list[str] | None = None,
    inputs: str | list[str] | None = None,
    targets: str | list[str] | None = None,
    drop_nonfinite_rows: bool = False,
    known_targets: list[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> TableData:
    """Read rows of inputs and targets from ``path`` and check them against a model's
    sample shapes ``in_shape`` and ``out_shape``.

    ``.npz`` with arrays ``x`` and ``y`` is used as it is; otherwise (and whenever
    ``inputs``/``targets`` are given) the file is a table (:func:`mlnnkit.data.tables.read_table`)
    and the columns are chosen by :func:`~mlnnkit.data.tables.select_columns` (a comma
    list or globs such as ``Rrs_*``, in file order). Without ``inputs``, the model's own
    input names ``known_inputs`` (an imported network's) are looked for, and without
    ``targets`` its output names ``known_targets``. Rows with NaN/Inf are an error unless
    ``drop_nonfinite_rows`` (then they are dropped with a warning; see
    :func:`mlnnkit.data.rows.drop_nonfinite`).
    """
    path = Path(path)
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    n_in = int(np.prod([d or 1 for d in in_shape]))
    n_out = int(np.prod([d or 1 for d in out_shape]))
    where = f"{path}: "
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    x = y = None
    if path.suffix.lower() == ".npz" and inputs is None and targets is None:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files or "y" not in f.files:
                raise UserError(
                    f"{where}an .npz needs arrays 'x' (rows x inputs) and 'y' (rows x outputs); "
                    f"it has {', '.join(f.files) or 'none'}: rename them, or pass inputs=COLS and "
                    "targets=COLS to pick columns"
                )
            x, y = np.asarray(f["x"]), np.asarray(f["y"])
        if y.ndim == 1:
            y = y[:, None]
        if x.ndim == 1 and len(in_shape) == 1:
            x = x[:, None]
        if len(x) != len(y):
            raise UserError(f"{where}'x' has {len(x)} rows but 'y' has {len(y)}")
        if len(x) == 0:
            raise UserError(f"{where}no data rows ('x' and 'y' are empty)")
        names = known_inputs
        if x.ndim == 2 and names and len(names) == x.shape[1]:
            input_names = names  # an imported network's own input names
        else:
            input_names = [f"x[{j}]" for j in range(x.shape[1])] if x.ndim == 2 else []
        target_names = [f"y[{j}]" for j in range(y.shape[1])] if y.ndim == 2 else []
        if x.shape[1:] != in_shape and not (len(in_shape) == 1 and x.ndim == 2):
            raise UserError(
                f"{where}'x' has samples of shape {x.shape[1:]} but the model takes {in_shape}"
            )
    else:
        df = read_table(path)
        if inputs is None:
            names = known_inputs
            if names and all(n in df.columns for n in names):
                inputs = list(names)
            else:
                raise UserError(
                    f"{where}pass inputs=COLS (the model's {n_in} inputs, in its order; a "
                    "comma list or a glob such as 'Rrs_*')"
                )
        if targets is None and known_targets and all(n in df.columns for n in known_targets):
            targets = list(known_targets)
        if targets is None:
            raise UserError(f"{where}pass targets=COLS (the model's {n_out} outputs, in order)")
        input_names = select_columns(df.columns, inputs, what="inputs", where=where)
        target_names = select_columns(df.columns, targets, what="targets", where=where)
        try:
            x = df[input_names].to_numpy("float64")
            y = df[target_names].to_numpy("float64")
        except (ValueError, TypeError) as e:
            raise UserError(f"{where}non-numeric values in the chosen columns: {e}") from None
    if len(in_shape) == 1 and x.shape[1] != n_in:
        raise UserError(
            f"{where}{x.shape[1]} input columns ({_short(input_names)}) but the model takes "
            f"{n_in} inputs: pass inputs=COLS with {n_in} columns in the network's order"
        )
    if y.shape[1:] != out_shape and (y.ndim != 2 or y.shape[1] != n_out):
        raise UserError(
            f"{where}{y.shape[1] if y.ndim == 2 else y.shape[1:]} target columns "
            f"({_short(target_names)}) but the model has {n_out} outputs: pass targets=COLS with "
            f"{n_out} columns in the network's order"
        )
    if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)):
        raise UserError(f"{where}'x' and 'y' must be numeric arrays")
    x = x.astype("float64")
    y = y.astype("float64")
    cols = [*input_names, *target_names] if len(in_shape) == 1 else None
    x, y, n_bad = drop_nonfinite(
        x, y, policy="warn" if drop_nonfinite_rows else "error", columns=cols, where=where, warn=warn
    )
    if len(x) == 0:
        raise UserError(f"{where}no rows to fine-tune on")
    return TableData(
        x=x, y=y, input_names=list(input_names), target_names=list(target_names), n_dropped=n_bad
    )


def _short(names: list[str], k: int = 6) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "")
