"""What every file kind of ``mlnnkit predict`` shares: the :class:`Source` and
:class:`Sink` bases, the choice of a model's inputs among a file's columns or variables,
and the scene (whole lines of variables of one shape) readers' and writers' common part.

A file kind is one module of :mod:`mlnnkit.predict` (``_npy``, ``_csv``, ...) holding its
``Source`` and ``Sink``, listed in :data:`mlnnkit.predict._kinds.FILE_KINDS`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlnnkit.data.tables import match_columns
from mlnnkit.errors import UserError

# Rows moved per block between the reader, the compute threads and the writer: about
# 32 MB of inputs and outputs, so memory stays bounded whatever the size of the file.
_BLOCK_BYTES = 32 << 20

# netCDF-C and HDF5 are not thread-safe: every read or write of a scene file takes this lock.
_FILE_LOCK = threading.RLock()


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
        try:
            chosen = match_columns(available, items)
        except LookupError as e:
            raise UserError(f"{path}: no {what} {e.args[0]!r} (the file has: {shown})") from None
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
        if len(available) != n or len(missing) < n:
            # Some of the model's names are there and some not: taking the columns by
            # position would silently feed the wrong variables.
            raise UserError(
                f"{path}: the model's input {what}s {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''} are not in the file (it has: {shown}); "
                f"pass --inputs with the {n} names in the model's order"
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
    its globs expanded in the file's ``listing`` order), the model's own input names, or
    the file's ``listing`` (e.g. ``"the file's column order"``).

    Example:
        >>> order_note("Rrs_*", None, ["Rrs_412"], "the file's column order")
        "--inputs order; globs in the file's column order"
    """
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


@dataclass
class Source:
    """The model's inputs in one file: ``n_rows`` samples of ``columns`` (model order).

    ``read(start, stop)`` returns rows ``start:stop`` as a float32 ``(rows, n_inputs)``
    array; ``blocks(block_rows)`` yields ``(start, block)`` through the file in order;
    ``ranges(block_rows)`` are row ranges cheap to read independently (Dask tasks).
    A kind's ``open(path, n_inputs, inputs, model_names)`` classmethod opens one.
    """

    path: Path
    kind: str
    n_rows: int
    columns: list[str]
    shape: tuple[int, ...] = ()  # a scene's shape (the rows are its elements, C order)
    order: str = ""  # where the order of ``columns`` came from (printed by the CLI)

    def ranges(self, block_rows: int | None = None) -> list[tuple[int, int]]:
        b = _block_rows(len(self.columns), block_rows)
        return [(i, min(i + b, self.n_rows)) for i in range(0, self.n_rows, b)]

    def blocks(self, block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        for start, stop in self.ranges(block_rows):
            yield start, self.read(start, stop)

    def read(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def clashes(self, names: list[str]) -> list[str]:
        """The ``names`` that already exist where the outputs would go (scenes only)."""
        return []

    def close(self) -> None:
        pass


class Sink:
    """Writes blocks of outputs ``write(start, y, flags=None)`` (``y``: float32 ``(rows,
    n_out)``; ``flags``: the rows' ``uint8`` quality flags, or None).

    A kind's sink is built as ``Sink(tmp, source, names, attrs, dtype, flags=None)``: the
    temporary output file, the opened input, the output names, the attributes a scene's
    new variables carry, the output dtype and, with ``mlnnkit predict --flags``, the flag
    variable's CF attributes (:func:`mlnnkit.retrieval.flag_attrs`): the sink then adds a
    ``quality_flags`` column or variable. A kind whose files hold one array (``.npy``) sets
    ``FLAGS_SIBLING`` and gets the temporary path of the sibling ``OUT.flags.npy`` as
    ``flags_path``.
    """

    FLAGS_SIBLING = False

    def write(self, start: int, y: np.ndarray, flags: np.ndarray | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass
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

    def _read_var(self, name: str, a: int, b: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


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

    flag_target: Any = None

    def write(self, start, y, flags=None):
        a, b, shape = _scene_lines(self.source, start, y)
        with _FILE_LOCK:
            for j, target in enumerate(self.targets):
                target[a:b] = y[:, j].reshape(shape)
            if flags is not None and self.flag_target is not None:
                self.flag_target[a:b] = flags.reshape(shape)

    def close(self):
        with _FILE_LOCK:
            self.handle.close()
