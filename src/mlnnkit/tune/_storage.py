"""Where a study lives (an SQLAlchemy URL Optuna's RDBStorage accepts) and how several
workers share it: a study-wide lock around "count the trials, start one", and the
detection of trials whose process died (kill -9, a crashed machine).

- The default is an SQLite file in the output folder (nothing to start). Several
  ``mlnnkit tune`` processes on one machine share it; the lock is a file lock next to it.
- PostgreSQL (``postgresql://user:pass@host/db``) serves workers on several machines; the
  lock is a PostgreSQL advisory lock, released by the server if a worker dies.
- A trial whose worker died is marked FAIL: at once when the worker ran on this machine
  (its process is gone), else by Optuna's heartbeat once no heartbeat came for
  ``GRACE_SECONDS``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Self

from mlnnkit.errors import UserError

if TYPE_CHECKING:
    import optuna

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 120
CONNECT_TIMEOUT_SECONDS = 5
SQLITE_BUSY_SECONDS = 120
WORKER_ATTR = "worker"


def _connect_args(url) -> dict:
    backend = url.get_backend_name()
    if backend == "sqlite":
        return {"timeout": SQLITE_BUSY_SECONDS}  # wait for other workers' writes
    if backend in ("postgresql", "mysql", "mariadb"):
        return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    return {}


def normalize_url(url: str) -> str:
    """``postgresql://...`` with the PostgreSQL driver that is installed: SQLAlchemy 2.1
    defaults to psycopg 3, many installs have psycopg2 (psycopg2-binary)."""
    import importlib.util

    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return url
    if parsed.drivername == "postgresql":
        for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
            if importlib.util.find_spec(module) is not None:
                return parsed.set(drivername=f"postgresql+{driver}").render_as_string(
                    hide_password=False
                )
    return url


def shown(url: str) -> str:
    """The URL with its password hidden (for messages)."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL at all: show it as given
        return url


def check_url(url: str) -> None:
    """Connect once with a short timeout; a bad or unreachable URL is a UserError."""
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise UserError(
            f"--storage {url!r} is not a database URL; pass e.g. sqlite:///study.db or "
            "postgresql://user:password@host:5432/dbname"
        ) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().parent
        if not folder.is_dir():
            raise UserError(f"--storage {shown(url)}: folder {folder} does not exist")
    try:
        engine = sqlalchemy.create_engine(parsed, connect_args=_connect_args(parsed))
        with engine.connect():
            pass
        engine.dispose()
    except (sqlalchemy.exc.NoSuchModuleError, ImportError) as e:
        raise UserError(
            f"--storage {shown(url)}: no database driver for it ({e}); for PostgreSQL "
            "pip install psycopg2-binary (mlnnkit's 'postgres' extra)"
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        first = " ".join(str(getattr(e, "orig", None) or e).split())[:300]
        raise UserError(f"cannot reach storage {shown(url)}: {first}") from None


_OPEN_ATTEMPTS = 5  # tries of open_storage on a new database another process creates too


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage for ``url`` with heartbeats on (so crashed trials become FAIL)."""
    import warnings

    import optuna
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    # A new database: RDBStorage creates its tables and inserts its schema version, and a
    # process opening the same database at that moment (another worker starting) can lose
    # the race ("UNIQUE constraint failed: alembic_version", "table ... already exists",
    # "database is locked"). Trying again then finds the schema in place.
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs={"connect_args": _connect_args(parsed)},
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as e:
            racing = isinstance(e, sqlalchemy.exc.IntegrityError) or any(
                s in str(e).lower() for s in ("already exists", "locked")
            )
            if not racing or attempt == _OPEN_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------------------ the lock
class StudyLock:
    """A lock held by one worker of a study at a time, across processes (and, on
    PostgreSQL, across machines). Re-entrant release: ``release()`` when not held is a no-op.

    Example:
        >>> lock = StudyLock.for_url("sqlite:///runs/t/study.db", "my-study")  # doctest: +SKIP
        >>> with lock:                                                          # doctest: +SKIP
        ...     ...  # count trials and start one
    """

    def __init__(self, acquire, release, close=lambda: None, shared: bool = True):
        self._acquire, self._release, self._close = acquire, release, close
        self.held = False
        self.shared = shared  # False: only guards this process (unknown database kind)

    @classmethod
    def for_url(cls, url: str, study_name: str) -> StudyLock:
        import sqlalchemy

        parsed = sqlalchemy.engine.make_url(url)
        backend = parsed.get_backend_name()
        if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
            return cls._file_lock(Path(str(parsed.database) + ".lock"))
        if backend == "postgresql":
            return cls._pg_lock(parsed, study_name)
        local = threading.Lock()
        return cls(local.acquire, local.release, shared=backend == "sqlite")

    @classmethod
    def _file_lock(cls, path: Path) -> StudyLock:
        import fcntl

        fh = open(path, "a+")  # noqa: SIM115 - held for the worker's life

        return cls(
            lambda: fcntl.flock(fh, fcntl.LOCK_EX),
            lambda: fcntl.flock(fh, fcntl.LOCK_UN),
            fh.close,
        )

    @classmethod
    def _pg_lock(cls, parsed, study_name: str) -> StudyLock:
        import sqlalchemy

        key = zlib.crc32(f"mlnnkit-tune:{study_name}".encode()) - 2**31
        engine = sqlalchemy.create_engine(
            parsed, connect_args=_connect_args(parsed), poolclass=sqlalchemy.pool.StaticPool
        )
        conn = engine.connect()

        def run(sql: str) -> None:
            conn.execute(sqlalchemy.text(sql), {"k": key})
            conn.commit()

        def close() -> None:
            conn.close()
            engine.dispose()

        return cls(
            lambda: run("SELECT pg_advisory_lock(:k)"),
            lambda: run("SELECT pg_advisory_unlock(:k)"),
            close,
        )

    def acquire(self) -> None:
        self._acquire()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._release()

    def close(self) -> None:
        self.release()
        self._close()

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --------------------------------------------------------------------- dead workers
def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _machine() -> str:
    """This machine and process namespace: a pid means something only within it."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pidns = ""
    return f"{socket.gethostname()}|{boot}|{pidns}"


def _start_time(pid: int) -> str:
    """Start time of a process (clock ticks since boot) so a reused pid is not mistaken
    for the worker; "" where /proc is not available."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()
    return "Z" if fields[0] in ("Z", "X") else fields[19]


def worker_id() -> str:
    """Identity of this worker process, stored on each trial it runs."""
    return f"{_machine()}|{os.getpid()}|{_start_time(os.getpid())}"


def _alive_here(worker: str) -> bool | None:
    """True/False for a worker of this machine; None when it ran elsewhere (or unknown)."""
    parts = worker.split("|")
    if len(parts) != 5 or not parts[1]:
        return None
    machine = "|".join(parts[:3])
    if machine != _machine():
        return None
    pid, started = int(parts[3]), parts[4]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _start_time(pid)
    return not (now == "Z" or (started and now and now != started))


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL every RUNNING trial whose worker is gone: a worker of this machine at
    once, others through Optuna's heartbeat (no heartbeat for ``GRACE_SECONDS``).
    Returns the numbers of the trials marked."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    failed = []
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in running:
        worker = t.user_attrs.get(WORKER_ATTR)
        if worker and _alive_here(worker) is False:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                study.tell(t.number, state=TrialState.FAIL)
                failed.append(t.number)
    others = {t.number for t in running} - set(failed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    if others:
        now_failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        failed += sorted(t.number for t in now_failed if t.number in others)
    return failed
