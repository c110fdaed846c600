"""One writer per run directory: a lock that ``train``, ``finetune`` and ``transfer`` hold
on their output folder while they run.

Two runs writing the same folder at once interleave their checkpoints, backups and
history. :func:`lock` takes an exclusive ``fcntl.flock`` on ``R/.mlnnkit-lock`` and
writes who holds it (pid, host, start time) into the file; a second process (or a second
run in the same process) gets a :class:`~mlnnkit.errors.UserError`: ``R is in use by
process N (started at ...)``. The kernel drops the lock when its holder dies, even by
``kill -9``, so a stale lock file of a dead process is simply taken over (said so in one
line on stderr); nothing else in the folder is touched, so a killed run resumes as
before. The lock file is removed when the run ends; a folder the lock created and the
run left empty (it failed before writing anything) is removed too.

Tuning studies are not locked: their workers share a study folder by design.

Example:
    >>> with lock("runs/r1"):          # doctest: +SKIP
    ...     train_and_write("runs/r1")

    >>> @one_writer("out_dir")         # doctest: +SKIP
    ... def run(cfg, out_dir): ...
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlnnkit import _atomic
from mlnnkit.errors import UserError

LOCK_NAME = ".mlnnkit-lock"

try:
    import fcntl
except ImportError:  # not POSIX: fall back to the pid in the file
    fcntl = None  # type: ignore[assignment]


def _holder(fd: int) -> dict[str, Any]:
    """What the lock file says about its holder ({} when it says nothing readable)."""
    for _ in range(20):  # the holder writes right after it locks: give it a moment
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            raw = os.read(fd, 4096)
        except OSError:
            return {}
        if raw.strip():
            try:
                info = json.loads(raw)
                return info if isinstance(info, dict) else {}
            except ValueError:
                return {}
        time.sleep(0.01)
    return {}


def _describe(info: dict[str, Any]) -> str:
    pid = info.get("pid", "?")
    started = info.get("started", "an unknown time")
    host = info.get("host")
    on = f" on {host}" if host and host != socket.gethostname() else ""
    cmd = f" running mlnnkit {info['command']}" if info.get("command") else ""
    return f"process {pid}{on} (started at {started}){cmd}"


def _write_holder(fd: int, command: str | None) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": command,
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(info) + "\n").encode())
    os.fsync(fd)


def _stale_note(run_dir: Path, old: dict[str, Any]) -> None:
    if old.get("pid") and old.get("pid") != os.getpid():
        _atomic.notify(
            f"note: {run_dir} was locked by {_describe(old)}, which is no longer running: "
            "taking the lock over"
        )


def _acquire_flock(path: Path, run_dir: Path, command: str | None) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            info = _holder(fd)
            os.close(fd)
            who = _describe(info) if info else "another process"
            raise UserError(
                f"{run_dir} is in use by {who}: one run writes a run directory at a time; "
                "wait for it to finish, or write to another folder"
            ) from None
        # The previous holder may have removed the file between our open and our lock:
        # then we hold a lock on a file nobody else sees. Start again.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            old = _holder_now(fd)
            _stale_note(run_dir, old)
            _write_holder(fd, command)
            return fd
        os.close(fd)


def _holder_now(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096) or b"{}")
    except (OSError, ValueError):
        return {}


def _acquire_pidfile(path: Path, run_dir: Path, command: str | None) -> int:
    # Without flock: O_EXCL creation, and a file whose process is gone is stale.
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                info = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                info = {}
            pid = info.get("pid")
            if isinstance(pid, int) and not _atomic.process_alive(pid):
                _stale_note(run_dir, info)
                path.unlink(missing_ok=True)
                continue
            raise UserError(
                f"{run_dir} is in use by {_describe(info) if info else 'another process'}: one "
                "run writes a run directory at a time; wait for it to finish, or write to "
                "another folder"
            ) from None
        _write_holder(fd, command)
        return fd


@contextlib.contextmanager
def lock(run_dir: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """Hold the run directory ``run_dir`` (created if missing) for the ``with`` block.

    Args:
        run_dir: the output folder of the run.
        command: what holds it (``"train"``), shown to a second process (default None).

    Raises:
        UserError: another live process (or another run of this one) holds it.

    Example:
        >>> with lock("runs/r1", "train"):  # doctest: +SKIP
        ...     ...
    """
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    _atomic.make_dir(run_dir, "run directory")  # one line naming it: a file in the way, no permission
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: exists and is not a folder")
    path = run_dir / LOCK_NAME
    try:
        fd = (_acquire_flock if fcntl is not None else _acquire_pidfile)(path, run_dir, command)
    except PermissionError as e:
        raise UserError(f"{run_dir}: cannot write the lock file ({e.strerror})") from None
    try:
        yield run_dir
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if the run left it empty


def one_writer(
    arg: str, *, when: Callable[[dict[str, Any]], bool] | None = None, command: str | None = None
) -> Callable:
    """Decorate a function whose argument ``arg`` is a run directory: hold :func:`lock` on it
    for the call (skipped when the argument is None or ``when(arguments)`` is false).

    Args:
        arg: the name of the run-directory parameter.
        when: given the bound arguments (defaults applied), whether to lock (default: always).
        command: the name shown to a second process (default: the function's module).

    Example:
        >>> @one_writer("out_dir", when=lambda a: a["save"])  # doctest: +SKIP
        ... def run(cfg, out_dir, save=True): ...
    """

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        name = command or fn.__module__.rsplit(".", 1)[-1]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind_partial(*args, **kwargs)
            bound.apply_defaults()
            target = bound.arguments.get(arg)
            if target is None or (when is not None and not when(bound.arguments)):
                return fn(*args, **kwargs)
            with lock(target, name):
                return fn(*args, **kwargs)

        return wrapper

    return deco


__all__ = ["LOCK_NAME", "lock", "one_writer"]
