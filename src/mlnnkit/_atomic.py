"""Write outputs under a temporary name and rename them when complete.

A crash (or Ctrl-C, or ``kill``) in the middle of writing never leaves a half-written
model, report or prediction file behind: either the old file, or nothing, or the new
complete file is there.

A killed process cannot remove its temporary file, so its name says whose it is:
``.tmp-<pid>-<host>-<random>-<name>`` (``host``: 6 hex digits of the host name's hash).
The next :func:`atomic_path` for the same output removes the temporary files of that
output left by processes of this host that are no longer running (or whose pid now
belongs to a process started after the file was last written), and says so in one line
on stderr. Temporary files of live processes, and of other hosts sharing the folder, are
left alone.

Every output folder and file of mlnnkit goes through this module, so an output that
cannot be written (a folder that is a file, a file that is a folder, no permission) is one
:class:`~mlnnkit.errors.UserError` naming the path, whichever command writes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from mlnnkit.errors import UserError


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


#: Where the one-line notes go (stderr); tests or embedding programs may replace it.
notify: Callable[[str], None] = _say


def host_tag() -> str:
    """6 hex digits naming this host in temporary and lock file names."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def process_alive(pid: int, not_started_after: float | None = None) -> bool:
    """True when process ``pid`` runs on this host (and, if ``not_started_after`` is a
    POSIX time, started no later than it: a pid reused by a newer process is not the
    process that wrote a file at that time).

    Example:
        >>> process_alive(os.getpid())
        True
    """
    if pid <= 0:
        return False
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return not_started_after is None or proc.create_time() <= not_started_after + 0.5
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess and friends: gone
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tmp_name(path: Path) -> Path:
    # Keep the full suffix (".keras", ".weights.h5", ".nc"): writers pick the format from it.
    return path.with_name(f".tmp-{os.getpid()}-{host_tag()}-{uuid.uuid4().hex[:6]}-{path.name}")


_TMP_PREFIX = r"\.tmp-(\d+)-([0-9a-f]{6})-[0-9a-f]{6}-"


def _size(p: Path) -> int:
    try:
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return p.stat().st_size
    except OSError:
        return 0


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``path`` that dead processes of this host left.

    Returns the removed paths (and says so in one line through :data:`notify`).

    Example:
        >>> remove_stale_temporaries("model.keras")   # nothing left by a dead process here
        []
    """
    path = Path(path)
    pattern = re.compile(f"(?:{_TMP_PREFIX})+{re.escape(path.name)}")
    me, host = os.getpid(), host_tag()
    removed: list[Path] = []
    size = 0
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(".tmp-")]
    except OSError:
        return removed
    for e in entries:
        m = pattern.fullmatch(e.name)
        if not m or m.group(2) != host or int(m.group(1)) == me:
            continue
        p = Path(e.path)
        try:
            mtime = p.lstat().st_mtime
        except OSError:
            continue
        if process_alive(int(m.group(1)), not_started_after=mtime):
            continue
        n = _size(p)
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError:
            continue
        removed.append(p)
        size += n
    if removed:
        names = ", ".join(p.name for p in removed[:3]) + (", ..." if len(removed) > 3 else "")
        pids = sorted({int(pattern.fullmatch(p.name).group(1)) for p in removed})
        notify(
            f"note: removed {len(removed)} temporary file{'s' if len(removed) > 1 else ''} "
            f"({_human(size)}) that killed process{'es' if len(pids) > 1 else ''} "
            f"{', '.join(map(str, pids))} left beside {path}: {names}"
        )
    return removed


def _human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


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

    Temporary files of ``path`` left by killed processes are removed first (see the
    module docstring).

    Example:
        >>> with atomic_path("notes.txt") as tmp:
        ...     _ = tmp.write_text("written whole or not at all")
        >>> Path("notes.txt").read_text()
        'written whole or not at all'
    """
    path = Path(path)
    make_dir(path.parent)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is an existing folder")
    remove_stale_temporaries(path)
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
