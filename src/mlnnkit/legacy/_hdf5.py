"""Open HDF5 files and read datasets with errors that name the file and the dataset.

Shared by the HDF5-based formats (:mod:`~mlnnkit.legacy.ocsmart`,
:mod:`~mlnnkit.legacy.rawh5`): h5py's own errors ("unable to open file: truncated file",
"Can't read data") become one-line :class:`~mlnnkit.errors.UserError` messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from mlnnkit.errors import UserError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: str | Path) -> bool:
    """True when the file starts with the HDF5 signature (no user block assumed)."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


@contextlib.contextmanager
def open_h5(path: str | Path, what: str = "HDF5") -> Iterator[h5py.File]:
    """Open ``path`` read-only; a missing, truncated or non-HDF5 file is a UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a {what} file")
    try:
        f = h5py.File(path, "r")
    except Exception as e:  # OSError mostly; anything h5py raises on a bad file
        if not (isinstance(e, OSError) or _raised_in_h5py(e)):
            raise
        kind = "truncated or corrupt" if is_hdf5(path) else "not an HDF5 file"
        reason = " ".join(str(e).split())
        raise UserError(f"{path}: cannot open as {what} ({kind}: {reason})") from None
    try:
        yield f
    except UserError:
        raise
    except Exception as e:
        # A damaged file fails deep inside h5py (OSError "Can't read data (bad heap
        # index...)", KeyError "Unable to open object", RuntimeError, a UnicodeError of a
        # garbled name): that is the file's fault, not a bug, so one line says so.
        if not _raised_in_h5py(e):
            raise
        reason = " ".join(str(e).split())[:200]
        raise UserError(
            f"{path}: cannot read the {what} file (truncated or corrupt: {type(e).__name__}: "
            f"{reason})"
        ) from None
    finally:
        with contextlib.suppress(Exception):
            f.close()


def _raised_in_h5py(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if "/h5py/" in name:
            return True
        tb = tb.tb_next
    return False


def read_array(f: h5py.File, name: str, path: str | Path) -> np.ndarray:
    """Read dataset ``name`` as a float64 array; missing or unreadable is a UserError."""
    obj = f.get(name)
    if obj is None:
        have = ", ".join(sorted(_list_datasets(f))[:12]) or "none"
        raise UserError(f"{path}: dataset {name!r} not found (datasets in the file: {have})")
    if not isinstance(obj, h5py.Dataset):
        raise UserError(f"{path}: {name!r} is a group, not a dataset")
    try:
        raw = obj[()]
    except (OSError, RuntimeError, ValueError) as e:
        raise UserError(
            f"{path}: cannot read dataset {name!r} (file truncated or corrupt: "
            f"{' '.join(str(e).split())})"
        ) from None
    arr = np.asarray(raw)
    if arr.dtype.kind not in "iuf":
        raise UserError(f"{path}: dataset {name!r} holds {arr.dtype} values, not numbers")
    return arr.astype(np.float64)


def has(f: h5py.File, name: str) -> bool:
    """True when ``name`` is a dataset of ``f``."""
    return isinstance(f.get(name), h5py.Dataset)


def _list_datasets(f: h5py.File) -> list[str]:
    out: list[str] = []

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            out.append(name)

    try:
        f.visititems(visit)
    except (OSError, RuntimeError):
        pass
    return out


def read_names(f: h5py.File, attr: str) -> list[str] | None:
    """A list of names stored as a root attribute, or None."""
    if attr not in f.attrs:
        return None
    vals = np.atleast_1d(f.attrs[attr])
    return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in vals]
