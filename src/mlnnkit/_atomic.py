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
        if not_started_after is not None and proc.create_time() > not_started_after + 0.5:
            return False
        return True
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
        >>> remove_stale_temporaries("run/model.keras")  # doctest: +SKIP
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    Temporary files of ``path`` left by killed processes are removed first (see the
    module docstring).

    Example:
        >>> with atomic_path("run/model.keras") as tmp:  # doctest: +SKIP
        ...     model.save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
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
