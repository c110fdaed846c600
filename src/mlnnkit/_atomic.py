"""Write outputs under a temporary name and rename them when complete.

A crash (or Ctrl-C, or ``kill``) in the middle of writing never leaves a half-written
model, report or prediction file behind: either the old file, or nothing, or the new
complete file is there.

Every output folder and file of mlnnkit goes through this module, so an output that
cannot be written (a folder that is a file, a file that is a folder, no permission) is one
:class:`~mlnnkit.errors.UserError` naming the path, whichever command writes it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from mlnnkit.errors import UserError


def _tmp_name(path: Path) -> Path:
    # Keep the full suffix (".keras", ".weights.h5", ".nc"): writers pick the format from it.
    return path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")


def _why(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "permission denied"
    return e.strerror.lower() if e.strerror else str(e)


def _file_in_the_way(path: Path) -> Path | None:
    """The first ancestor of ``path`` (or ``path`` itself) that exists and is not a folder."""
    for p in [*reversed(path.parents), path]:
        if p.exists() and not p.is_dir():
            return p
    return None


def make_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create the folder ``path`` (and its parents) if missing; a :class:`UserError`
    naming ``path`` if it cannot be (a file is in the way, no permission).

    Args:
        path: the folder.
        what: what the folder is, for the message (default ``"output folder"``).

    Example:
        >>> import tempfile
        >>> d = make_dir(Path(tempfile.mkdtemp()) / "run" / "plots")
        >>> d.is_dir()
        True
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = _file_in_the_way(path) or path
        where = "" if blocker == path else f" ({blocker} is a file)"
        raise UserError(
            f"cannot create {what} {path}: a file is in the way{where}; choose another path"
        ) from None
    except OSError as e:
        raise UserError(f"cannot create {what} {path}: {_why(e)}") from None
    return path


def check_output_file(path: str | os.PathLike, what: str = "output") -> Path:
    """Check, before any work, that the file ``path`` can be written: it is not an
    existing folder, no file stands where a folder of its path must be, and its folder
    (or the nearest existing ancestor, when the folder is still to be made) accepts new
    files. Creates nothing. A :class:`UserError` naming ``path`` otherwise.

    Args:
        path: the output file.
        what: what it is, for the message (default ``"output"``; e.g. ``"--out"``).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> check_output_file(d / "model.keras") == d / "model.keras"
        True
        >>> check_output_file(d)
        Traceback (most recent call last):
        ...
        mlnnkit.errors.UserError: output ... is an existing folder: give a file name (e.g. .../model.keras)
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"{what} {path} is an existing folder: give a file name (e.g. {path / 'model.keras'})"
        )
    _probe(path.parent, f"cannot write {what} {path}")
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Check, before any work, that the folder ``path`` can be made (or is there) and
    written to: no file stands in its way and the nearest existing folder accepts new
    files. Creates nothing. A :class:`UserError` naming ``path`` otherwise.

    Args:
        path: the output folder.
        what: what it is, for the message (default ``"output folder"``).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> check_output_dir(d / "run") == d / "run"
        True
        >>> (d / "f").touch()
        >>> check_output_dir(d / "f" / "run")
        Traceback (most recent call last):
        ...
        mlnnkit.errors.UserError: cannot create output folder .../f/run: .../f is a file, not a folder
    """
    path = Path(path)
    _probe(path, f"cannot create {what} {path}")
    return path


def _probe(folder: Path, prefix: str) -> None:
    """Raise ``prefix: why`` unless ``folder`` (or its nearest existing ancestor, which
    must be a folder) accepts a new file."""
    blocker = _file_in_the_way(folder) if str(folder) not in ("", ".") else None
    if blocker is not None:
        raise UserError(f"{prefix}: {blocker} is a file, not a folder")
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:  # a real write probe: os.access says yes to root even where writing fails
        with open(folder / f".tmp-{uuid.uuid4().hex[:8]}-probe", "x") as fh:
            probe = Path(fh.name)
        probe.unlink()
    except OSError as e:
        raise UserError(f"{prefix}: {folder}: {_why(e)}") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The folder of ``path`` is created if missing. A folder that cannot be created or
    written, or a ``path`` that is an existing folder, is a :class:`UserError` naming
    ``path`` (raised before the temporary file is written where it can be told then).

    Example:
        >>> with atomic_path("run/model.keras") as tmp:  # doctest: +SKIP
        ...     model.save(tmp)
    """
    path = Path(path)
    make_dir(path.parent)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is an existing folder")
    tmp = _tmp_name(path)
    try:
        try:
            yield tmp
            os.replace(tmp, path)
        except PermissionError:
            raise UserError(f"cannot write {path}: {path.parent}: permission denied") from None
        except IsADirectoryError:
            raise UserError(f"cannot write {path}: it is an existing folder") from None
    finally:
        if tmp.exists():
            if tmp.is_dir():
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    import json

    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
