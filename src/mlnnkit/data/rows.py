"""The row policies every workflow shares: one seeded random splitter
(:func:`split_rows`) and one policy for rows with NaN/Inf values (:func:`drop_nonfinite`).

Example:
    >>> import numpy as np
    >>> tr, va, te = split_rows(10, 0.2, 0.25, seed=0)
    >>> len(tr), len(va), len(te)
    (6, 2, 2)
    >>> x, y, n = drop_nonfinite(np.array([[1.0], [np.nan]]), np.array([[1.0], [2.0]]))
    >>> x.tolist(), n
    ([[1.0]], 1)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mlnnkit.errors import UserError

__all__ = ["drop_nonfinite", "split_rows"]


def split_rows(
    n: int,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    *,
    where: str = "",
    names: tuple[str, str] = ("--test-fraction", "--val-fraction"),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random split of ``n`` rows into (train, validation, test) indices.

    ``test_fraction`` of all rows is held out for testing (the first rows of a seeded
    permutation); ``val_fraction`` of the rest is kept for early stopping. Each part asked
    for must get at least one row.

    Args:
        n: number of rows.
        test_fraction: fraction of all rows held out, in ``[0, 1)``.
        val_fraction: fraction of the remaining rows for validation, in ``[0, 1)``.
        seed: seed of the permutation.
        where: prefix of error messages (e.g. the data file).
        names: how errors name the two fractions (default: the CLI options).
    """
    t_name, v_name = names
    if not 0 <= test_fraction < 1:
        raise UserError(f"{t_name} must be in [0, 1) (got {test_fraction})")
    if not 0 <= val_fraction < 1:
        raise UserError(f"{v_name} must be in [0, 1) (got {val_fraction})")
    order = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    n_val = round((n - n_test) * val_fraction)
    n_train = n - n_test - n_val
    if (test_fraction > 0 and n_test < 1) or (val_fraction > 0 and n_val < 1) or n_train < 1:
        raise UserError(
            f"{where}{n} rows are too few for {t_name} {test_fraction} and "
            f"{v_name} {val_fraction} ({n_test} test, {n_val} validation, {n_train} "
            "training rows): give more rows or smaller fractions"
        )
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def drop_nonfinite(
    x: np.ndarray,
    y: np.ndarray,
    *,
    policy: str = "drop",
    columns: list[str] | None = None,
    where: str = "",
    warn: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Remove the rows with NaN or Inf in ``x`` or ``y``; returns ``(x, y, n_dropped)``.

    Args:
        x: inputs, rows first.
        y: targets, rows first.
        policy: ``"drop"`` (silently, default), ``"warn"`` (drop and call ``warn`` with a
            line naming the first bad row and column) or ``"error"`` (raise a UserError).
        columns: the names of ``x``'s then ``y``'s columns (for the message).
        where: prefix of the messages (e.g. the data file).
        warn: called with the warning line (default: print ``warning: ...`` on stderr).
    """
    flat_x = x.reshape(len(x), -1)
    flat_y = y.reshape(len(y), -1)
    bad = ~(np.isfinite(flat_x).all(axis=1) & np.isfinite(flat_y).all(axis=1))
    n_bad = int(bad.sum())
    if not n_bad:
        return x, y, 0
    if policy != "drop":
        first = int(np.flatnonzero(bad)[0])
        vals = np.concatenate([flat_x[first], flat_y[first]])
        col = columns[int(np.flatnonzero(~np.isfinite(vals))[0])] if columns else "?"
        # rows counted from 1, as predict counts them ("data row N")
        msg = (
            f"{n_bad} of {len(x)} rows have NaN or Inf values "
            f"(first: data row {first + 1}, column {col})"
        )
        if policy == "error":
            raise UserError(f"{where}{msg}: remove those rows or pass --drop-nonfinite")
        if warn is None:
            import sys

            def warn(m):
                print(f"warning: {m}", file=sys.stderr)

        warn(f"{where}{msg}: dropped")
    return x[~bad], y[~bad], n_bad
