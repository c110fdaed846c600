# Over 400 lines: one job, predict files as Dask tasks (the model reference, worker checks, faults, the client-side writes).
"""``mlnnkit predict --dask``: the work of :mod:`mlnnkit.predict` as Dask tasks.

Every input file is cut into row ranges that are cheap to read on their own (whole lines
of a scene, row groups of a Parquet file, blocks of a ``.npy`` map; a CSV file is one
task); each range is one task that reads its rows, runs the compiled model on them and
returns the outputs. The client gathers the finished blocks and writes each file's output
in order, atomically (temporary name, renamed when its last block is in). At most a few
tasks per worker thread are in flight, so memory stays bounded for inputs larger than
memory and for any number of files. A file whose reading or prediction fails is reported
by name and its output removed; the other files go on.

Without an address, the tasks run on local threads (an in-process ``LocalCluster`` with
``processes=False``); with one (``tcp://host:8786``), on that dask.distributed cluster.
The model travels as what it is on disk: the saved file's bytes (or, with shared storage,
its path), checked by a SHA-256 content hash, loaded and compiled once per worker process
and cached there under that hash (:func:`worker_model`); never a pickled Keras object.
Before any work is sent, every worker is checked (mlnnkit importable, the client's
versions of mlnnkit, Keras and JAX; the model loads there): a worker that lacks something
is named in one line. With shared storage the workers read their row ranges from the
files themselves; without, the client reads them and each task carries its rows. Outputs
are written by the client only, so a worker lost mid-run costs only the tasks it held,
which Dask reruns elsewhere.

Example:
    >>> from mlnnkit.predict import plan_jobs, predict_files_dask
    >>> jobs = plan_jobs(["scenes/*.nc"], "outdir/")  # doctest: +SKIP
    >>> results = predict_files_dask("net.keras", jobs, address="tcp://10.0.0.5:8786")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np

from mlnnkit import _atomic
from mlnnkit.errors import UserError
from mlnnkit.models import model_io_sizes
from mlnnkit.predict._base import Source
from mlnnkit.predict._files import FileResult, error_text, prepare
from mlnnkit.predict._kinds import flags_sibling, open_sink, open_source

# Seconds to wait for a scheduler (and for its first worker) before giving up.
DEFAULT_TIMEOUT = 10.0

# A client in these states has lost its scheduler (and every task it knew).
_LOST = ("connecting", "closing", "closed")


# --------------------------------------------------------------- the model on workers


@dataclass(frozen=True)
class ModelRef:
    """What a worker needs to load the model itself: the model file's bytes (``blob``) or
    a ``path`` every worker can read, its file ``name`` (the suffix picks the format) and
    ``key``, the SHA-256 of the file's content. Never a pickled Keras object (Keras 3
    models cannot be pickled portably); a worker loads the file once and caches the
    model under ``key`` (:func:`worker_model`).

    Example:
        >>> ref = model_ref("net.keras")  # doctest: +SKIP
        >>> ref.key[:12], ref.name, len(ref.blob)  # doctest: +SKIP
        ('3f0c8a1e55d2', 'net.keras', 45911)
    """

    key: str
    name: str
    blob: bytes | None = None
    path: str | None = None

    def __repr__(self) -> str:  # never print the bytes (Dask logs task arguments)
        how = f"path={self.path!r}" if self.path else f"{len(self.blob or b'')} bytes"
        return f"ModelRef({self.name!r}, {self.key[:12]}, {how})"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_ref(model, *, shared_storage: bool = False) -> ModelRef:
    """The :class:`ModelRef` of ``model``: a path to a saved model (``.keras``, ``.h5``),
    or a built ``keras.Model`` (saved to ``.keras`` bytes here).

    Args:
        model: the model file's path, or a ``keras.Model``.
        shared_storage: False (default): the file's bytes travel to the workers. True:
            only the path (made absolute) travels and every worker reads the file there
            (a file system all workers mount at the client's paths); needs a path.
    """
    if isinstance(model, (str, os.PathLike)):
        path = Path(model).resolve()
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UserError(f"model file not readable: {model} ({e.strerror or e})") from None
        if shared_storage:
            return ModelRef(_sha256(data), path.name, path=str(path))
        return ModelRef(_sha256(data), path.name, blob=data)
    if shared_storage:
        raise UserError(
            "shared_storage=True sends the model's path to the workers, so pass the model as "
            "the path of its saved file (or leave shared_storage False to send its bytes)"
        )
    with tempfile.TemporaryDirectory(prefix="mlnnkit-model-") as d:
        f = Path(d) / f"{getattr(model, 'name', None) or 'model'}.keras"
        model.save(f)
        data = f.read_bytes()
    return ModelRef(_sha256(data), f.name, blob=data)


# Models loaded in this process, by content hash (most recently used last). A worker
# process keeps a few, so a long-lived cluster serving several models does not grow.
_MODELS: OrderedDict[str, Any] = OrderedDict()
_MODELS_LOCK = threading.Lock()
_MODELS_KEPT = 4


def _where() -> str:
    try:
        from distributed import get_worker

        return f"Dask worker {get_worker().address}"
    except (ImportError, ValueError):
        return "this process"


def _load_ref(ref: ModelRef):
    from mlnnkit.models import load_model_for_predict

    if ref.path is not None:
        path = Path(ref.path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UserError(
                f"{_where()} cannot read the model file {path} ({e.strerror or e}); with "
                "--shared-storage every worker must see the client's files at the same paths"
            ) from None
        if _sha256(data) != ref.key:
            raise UserError(
                f"{_where()} sees another file at {path} than the client (content hash "
                f"{_sha256(data)[:12]}, the client's {ref.key[:12]}); with --shared-storage "
                "every worker must see the client's files at the same paths"
            )
        return load_model_for_predict(path)
    if ref.blob is None or _sha256(ref.blob) != ref.key:
        raise UserError(f"{_where()} received a damaged model file {ref.name}")
    with tempfile.TemporaryDirectory(prefix="mlnnkit-model-") as d:
        f = Path(d) / ref.name
        f.write_bytes(ref.blob)
        return load_model_for_predict(f)


def worker_model(ref: ModelRef):
    """The model of ``ref`` in this process: loaded from its file (bytes or shared path)
    the first time, then the cached one (keyed by the content hash)."""
    with _MODELS_LOCK:
        model = _MODELS.get(ref.key)
        if model is None:
            model = _load_ref(ref)
            _MODELS[ref.key] = model
            while len(_MODELS) > _MODELS_KEPT:
                _MODELS.popitem(last=False)
        else:
            _MODELS.move_to_end(ref.key)
        return model


@contextlib.contextmanager
def _lent(ref: ModelRef, model):
    """Put the client's own ``model`` in this process's cache for the run, so workers
    running in this process (local threads) use it instead of loading a copy."""
    with _MODELS_LOCK:
        added = ref.key not in _MODELS
        if added:
            _MODELS[ref.key] = model
    try:
        yield
    finally:
        if added:
            with _MODELS_LOCK:
                if _MODELS.get(ref.key) is model:
                    del _MODELS[ref.key]


def _hold(ref: ModelRef) -> ModelRef:
    """The task whose result is the model reference: Dask copies it to the workers that
    need it and recomputes it (from the scheduler's copy) if every holder is lost."""
    return ref


def _warm(ref: ModelRef, chunk_rows: int | None, limit_margin: float | None = None) -> str:
    """First task on each worker: load and compile the model there (errors name it);
    with ``limit_margin`` (flags asked for), the program of outputs and flags."""
    from mlnnkit.predict._forward import forward_for

    model = worker_model(ref)
    if limit_margin is not None:
        from mlnnkit.retrieval import flags_model

        model = flags_model(model, limit_margin)
    forward_for(model, chunk_rows)
    return _where()


def _read_predict(ref: ModelRef, path: str, n_inputs: int, columns: list[str], start: int,
                  stop: int, chunk_rows: int | None, limit_margin: float | None = None):  # fmt: skip
    """A task with shared storage: read rows ``start:stop`` of ``path`` and predict them
    (returns what :func:`_predict_rows` returns)."""
    source = open_source(path, n_inputs, None if Path(path).suffix == ".npy" else columns)
    try:
        x = source.read(start, stop)
        return _predict_rows(ref, x, chunk_rows, limit_margin)
    finally:
        source.close()


def _predict_rows(ref: ModelRef, x: np.ndarray, chunk_rows: int | None,
                  limit_margin: float | None = None):  # fmt: skip
    """A task: predict the rows ``x`` (read and sent by the client). Returns the outputs
    as ``(rows, n_out)``; with ``limit_margin`` (``--flags``), the pair ``(outputs,
    flags)`` from the one compiled program of :func:`mlnnkit.retrieval.flags_model` (the
    local path's), flags ``uint8`` of shape ``(rows,)``."""
    from mlnnkit.predict._forward import predict_array

    model = worker_model(ref)
    if limit_margin is None:
        y = predict_array(model, x, chunk_rows, workers=1)
        return y.reshape(len(y), -1)
    y, f = predict_array(model, x, chunk_rows, workers=1, flags=True, limit_margin=limit_margin)
    return y.reshape(len(y), -1), f


def _versions_probe():
    """A function that runs on a worker with or without mlnnkit (it is defined locally,
    so Dask sends its code, not a reference to this module): the versions it finds."""

    def probe():
        import importlib
        import importlib.metadata as md
        import os as _os

        found = {"backend": _os.environ.get("KERAS_BACKEND", "")}
        try:
            found["mlnnkit"] = importlib.import_module("mlnnkit").__version__
        except Exception as e:  # noqa: BLE001 - reported by the client
            found["mlnnkit"] = None
            found["error"] = f"{type(e).__name__}: {e}"
        found["backend"] = _os.environ.get("KERAS_BACKEND", "")
        for dist in ("keras", "jax", "jaxlib"):
            try:
                found[dist] = md.version(dist)
            except md.PackageNotFoundError:
                found[dist] = None
        return found

    return probe


def _client_versions() -> dict:
    import importlib.metadata as md

    import mlnnkit

    found = {"mlnnkit": mlnnkit.__version__, "backend": os.environ.get("KERAS_BACKEND", "")}
    for dist in ("keras", "jax", "jaxlib"):
        try:
            found[dist] = md.version(dist)
        except md.PackageNotFoundError:  # pragma: no cover - installed with mlnnkit
            found[dist] = None
    return found


def check_workers(client) -> int:
    """Check every worker of ``client`` before any work is sent: mlnnkit importable there,
    the client's versions of mlnnkit, Keras (and its backend) and JAX. Returns the number of worker threads; raises a
    :class:`~mlnnkit.errors.UserError` naming the first worker that lacks something."""
    mine = _client_versions()
    found = client.run(_versions_probe(), on_error="return")
    for worker, got in sorted(found.items()):
        if isinstance(got, BaseException):
            raise UserError(f"Dask worker {worker} cannot run mlnnkit's check: {error_text(got)}")
        if got.get("mlnnkit") is None:
            raise UserError(
                f"Dask worker {worker} lacks mlnnkit ({got.get('error', 'not installed')}); "
                f"install mlnnkit {mine['mlnnkit']} (`pip install mlnnkit=={mine['mlnnkit']}`, "
                "or the client's source) where the workers run"
            )
        for what in ("mlnnkit", "keras", "jax", "jaxlib"):
            if got.get(what) != mine[what]:
                raise UserError(
                    f"Dask worker {worker} has {what} {got.get(what) or '(none)'} but the "
                    f"client has {mine[what]}; install the same versions on every worker "
                    f"(`pip install {what}=={mine[what]}`)"
                )
        if (got.get("backend") or "jax") != (mine["backend"] or "jax"):
            raise UserError(
                f"Dask worker {worker} runs Keras on {got['backend']!r}, the client on "
                f"{mine['backend']!r}; set KERAS_BACKEND={mine['backend']} for the workers"
            )
    return max(1, sum(client.nthreads().values()))


def _warm_workers(client, held, chunk_rows: int | None, limit_margin: float | None = None) -> None:
    """Load and compile the model on every worker (one first task each), so that a worker
    that cannot is named before any work is sent, and the work starts at full speed."""
    workers = sorted(client.nthreads())
    warm = [
        client.submit(
            _warm,
            held,
            chunk_rows,
            limit_margin,
            workers=[w],
            allow_other_workers=True,
            pure=False,
        )
        for w in workers
    ]
    for w, f in zip(workers, warm):
        try:
            f.result()
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the worker raised, one line
            raise UserError(f"Dask worker {w} cannot load the model: {error_text(e)}") from None


@dataclass
class _FileState:
    index: int
    src: Path
    dst: Path
    source: Source
    sink: Any
    stack: contextlib.ExitStack
    ranges: list[tuple[int, int]]
    t0: float
    next_write: int = 0  # index of the next range to write
    done: dict[int, np.ndarray] = field(default_factory=dict)
    submitted: int = 0
    futures: set = field(default_factory=set)
    rows: int = 0
    masked: int = 0
    error: str | None = None
    counts: dict[str, int] | None = None  # with flags: rows carrying each flag bit


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


@contextlib.contextmanager
def dask_client(address=None, *, timeout: float = DEFAULT_TIMEOUT):
    """A ``distributed.Client``: on ``address`` (a scheduler address, a ``Client`` or a
    cluster), or on an in-process cluster of local threads when ``address`` is None.

    Args:
        address: ``tcp://host:8786``, a ``distributed.Client`` (used as is), a cluster
            object, or None (default: local threads, one per core).
        timeout: seconds to wait for the scheduler to answer (default 10); an address
            that cannot be reached raises :class:`~mlnnkit.errors.UserError` by then.

    Example:
        >>> with dask_client("tcp://10.0.0.5:8786", timeout=5) as client:  # doctest: +SKIP
        ...     print(client.nthreads())
    """
    from distributed import Client, LocalCluster

    if timeout is None or not timeout > 0:
        raise UserError(f"timeout must be > 0 seconds, not {timeout}")
    if address is not None and not isinstance(address, str):
        if isinstance(address, Client):
            yield address
            return
        with Client(address) as client:  # a cluster object
            yield client
        return
    if address in (None, "", "local", "threads"):
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover
            cores = os.cpu_count() or 1
        with warnings.catch_warnings():  # "Port 8787 is already in use": no dashboard here
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            cluster = LocalCluster(
                processes=False, n_workers=1, threads_per_worker=cores, dashboard_address=None
            )
        with cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(address, timeout=f"{float(timeout)}s")
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        detail = "" if "Timed out" in str(e) else f" ({_one_line(e)})"
        raise UserError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s{detail}; "
            "check the address and that `dask scheduler` runs there"
        ) from None
    with client:
        yield client


def _in_this_process(client) -> bool:
    """True when every worker of ``client`` runs in this process (local threads)."""
    try:
        pids = client.run(os.getpid, on_error="return")
    except Exception:  # noqa: BLE001 - then treat them as remote
        return False
    return bool(pids) and all(p == os.getpid() for p in pids.values())


def predict_files_dask(
    model,
    jobs: Sequence[tuple[Path, Path]],
    *,
    address=None,
    shared_storage: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    inputs=None,
    outputs=None,
    chunk_rows: int | None = None,
    block_rows: int | None = None,
    tasks_per_thread: int = 2,
    progress: Callable[[int], None] | None = None,
    on_open: Callable[[Source], None] | None = None,
    on_done: Callable[[FileResult], None] | None = None,
    flags: bool = False,
    limit_margin: float = 0.02,
) -> list[FileResult]:
    """Predict every ``(input, output)`` job as Dask tasks; same results as
    :func:`mlnnkit.predict.predict_files`, file for file and bit for bit (flags included).

    Args:
        model: the path of a saved model (``.keras``, ``.h5``: what travels to the
            workers is that file) or a built ``keras.Model`` (saved to ``.keras`` bytes).
        jobs: ``(input, output)`` pairs, e.g. from :func:`mlnnkit.predict.plan_jobs`.
        address: the cluster (see :func:`dask_client`); default None, local threads.
        shared_storage: True: every worker reads the model file and the inputs itself, at
            the client's (absolute) paths (one machine, or a file system every worker
            mounts at the same paths; a ``keras.Model`` still travels as bytes). False: the client
            sends the model file's bytes once and each block of input rows with its task,
            so workers need no access to the files. Default None: True on local threads,
            False on a cluster.
        timeout: seconds to wait for the scheduler and for its first worker (default 10).
        inputs, outputs, chunk_rows, block_rows, progress, on_open, on_done: as for
            :func:`mlnnkit.predict.predict_files` (``block_rows`` is also the rows
            per task; default about 32 MB of data).
        tasks_per_thread: tasks in flight per worker thread (default 2; bounds memory).
        flags: also write the ``uint8`` quality flags, as :func:`mlnnkit.predict.predict_file`
            does (a ``quality_flags`` variable with CF attributes, a column, or
            ``OUT.flags.npy``); each task returns its rows' outputs and flags, from the one
            compiled program of :func:`mlnnkit.retrieval.flags_model`, and every result's
            ``flag_counts`` says how many rows carry each bit. Default False.
        limit_margin: with ``flags``, the margin of ``output_at_limit`` (default 0.02).

    Returns:
        one :class:`~mlnnkit.predict.FileResult` per job, in the jobs' order; a file
        that failed (unreadable, no rows, a task that failed) has ``error`` set and no
        output file. Outputs are written by the client, each under a temporary name
        renamed when complete, so a worker lost mid-run (its tasks are rerun elsewhere by
        Dask) changes nothing in them.

    Raises:
        UserError: the scheduler cannot be reached, it has no worker, a worker lacks
            mlnnkit (or has other versions) or cannot load the model, or the scheduler
            is lost mid-run (outputs in progress removed, finished ones kept).

    Example:
        >>> from mlnnkit.predict import plan_jobs
        >>> jobs = plan_jobs(["scenes/*.nc"], "out/")  # doctest: +SKIP
        >>> results = predict_files_dask("net.keras", jobs, address="tcp://10.0.0.5:8786")  # doctest: +SKIP
        >>> [r.error for r in results if r.error]  # doctest: +SKIP
        []
    """
    from distributed import as_completed

    from mlnnkit.models import load_model_for_predict
    from mlnnkit.predict._forward import compute_dtype

    if tasks_per_thread < 1:
        raise UserError(f"tasks_per_thread must be >= 1, not {tasks_per_thread}")
    local_model = load_model_for_predict(model) if isinstance(model, (str, os.PathLike)) else model
    n_in, _ = model_io_sizes(local_model)
    dtype = compute_dtype(local_model)
    margin = None  # what the tasks get: None, or the margin when flags are asked for
    flag_cf = None
    if flags:
        from mlnnkit.retrieval import flag_attrs, flag_counts, flags_model

        flags_model(local_model, limit_margin)  # checks the margin and the model, here
        margin = float(limit_margin)
        flag_cf = flag_attrs()
    results: dict[int, FileResult] = {}

    def report(i: int, r: FileResult) -> None:
        results[i] = r
        if on_done is not None:
            on_done(r)

    def finish(st: _FileState, exc: BaseException | None, *, tell: bool = True) -> None:
        for f in st.futures:
            with contextlib.suppress(Exception):  # the client may be closed already
                f.cancel()
        st.futures.clear()
        try:
            st.sink.close()
        except Exception as e:  # noqa: BLE001
            exc = exc or e
        if exc is None:
            try:
                st.stack.close()  # renames the temporary file
            except Exception as e:  # noqa: BLE001
                exc = e
        else:
            st.stack.__exit__(type(exc), exc, exc.__traceback__)  # removes it
        st.source.close()
        r = FileResult(
            st.src, st.dst, st.rows if exc is None else 0, st.masked if exc is None else 0,
            time.perf_counter() - st.t0, error=None if exc is None else error_text(exc),
            flag_counts=st.counts if exc is None else None,
        )  # fmt: skip
        if tell:
            report(st.index, r)
        else:
            results[st.index] = r

    with dask_client(address, timeout=timeout) as client:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise UserError(
                f"the Dask scheduler at {client.scheduler.address} has no worker (waited "
                f"{timeout:g} s); start some with `dask worker {client.scheduler.address}`"
            ) from None
        scheduler = client.scheduler.address
        in_process = _in_this_process(client)
        if shared_storage is None:
            shared_storage = in_process
        if not in_process:
            check_workers(client)
        is_path = isinstance(model, (str, os.PathLike))
        ref = model_ref(model, shared_storage=bool(shared_storage) and is_path)
        with _lent(ref, local_model), dask.config.set(
            {"distributed.admin.large-graph-warning-threshold": "4GB"}  # blocks travel in tasks
        ):  # fmt: skip
            held = client.submit(_hold, ref, pure=False)
            if not in_process:
                _warm_workers(client, held, chunk_rows, margin)
            nthreads = max(1, sum(client.nthreads().values()))
            window = max(2, tasks_per_thread * nthreads)
            pending = list(enumerate(jobs))
            active: list[_FileState] = []
            ac = as_completed()
            in_flight = 0
            where: dict[Any, tuple[_FileState, int]] = {}

            def open_next() -> bool:
                while pending:
                    i, (src, dst) = pending.pop(0)
                    t0 = time.perf_counter()
                    try:
                        source, names, out_kind, attrs = prepare(
                            local_model, src, dst, inputs=inputs, outputs=outputs, flags=flags
                        )  # an input without rows is refused here (open_source), as locally
                    except Exception as e:  # noqa: BLE001 - reported per file
                        report(i, FileResult(Path(src), Path(dst), 0, 0, 0.0, error=error_text(e)))
                        continue
                    stack = contextlib.ExitStack()
                    try:
                        tmp = stack.enter_context(_atomic.atomic_path(dst))
                        sibling = flags_sibling(out_kind, Path(dst)) if flags else None
                        tmp_flags = (stack.enter_context(_atomic.atomic_path(sibling))
                                     if sibling else None)  # fmt: skip
                        sink = open_sink(tmp, out_kind, source, names, attrs, dtype,
                                         flags=flag_cf, flags_path=tmp_flags)  # fmt: skip
                    except Exception as e:  # noqa: BLE001
                        stack.__exit__(type(e), e, e.__traceback__)
                        source.close()
                        report(i, FileResult(Path(src), Path(dst), 0, 0, 0.0, error=error_text(e)))
                        continue
                    if on_open is not None:
                        on_open(source)
                    st = _FileState(i, Path(src), Path(dst), source, sink, stack,
                                    source.ranges(block_rows), t0)  # fmt: skip
                    if flags:
                        st.counts = dict.fromkeys(flag_counts(np.zeros(0, np.uint8)), 0)
                    active.append(st)
                    return True
                return False

            def check_connected(exc: BaseException | None = None) -> None:
                """A lost scheduler fails the run (not each file in turn).

                The future may raise the closed connection before the client's status
                says so (a race seen in CI), so the exception's kind counts too."""
                from distributed.comm.core import CommClosedError

                if isinstance(exc, CommClosedError) or (
                    str(getattr(client.status, "value", client.status)) in _LOST
                ):
                    done = sum(1 for r in results.values() if r.error is None)
                    raise UserError(
                        f"lost the connection to the Dask scheduler at {scheduler} mid-run; "
                        f"{done} of {len(jobs)} outputs were written, the others not (none "
                        "half-written): run again for those"
                    )

            def submit_one(st: _FileState) -> None:
                k = st.submitted
                a, b = st.ranges[k]
                if shared_storage:
                    fut = client.submit(
                        _read_predict, held, str(Path(st.source.path).resolve()), n_in,
                        st.source.columns, a, b, chunk_rows, margin, pure=False,
                    )  # fmt: skip
                else:  # the client reads; the rows travel in the task
                    x = np.array(st.source.read(a, b), copy=True)
                    fut = client.submit(_predict_rows, held, x, chunk_rows, margin, pure=False)
                st.submitted += 1
                st.futures.add(fut)
                where[fut] = (st, k)
                ac.add(fut)

            def submit_more() -> None:
                nonlocal in_flight
                while in_flight < window:
                    st = next((s for s in active if s.submitted < len(s.ranges)), None)
                    if st is None:
                        if not open_next():
                            return
                        continue
                    try:
                        submit_one(st)
                    except Exception as e:  # noqa: BLE001 - reading on the client failed
                        check_connected(e)
                        finish(st, e)  # its other tasks are cancelled, and counted out below
                        active.remove(st)
                        continue
                    in_flight += 1

            try:
                while True:
                    submit_more()
                    if in_flight == 0:
                        break
                    fut = next(ac)
                    in_flight -= 1
                    st, k = where.pop(fut)
                    if st.index in results:  # its file already failed (tasks cancelled)
                        continue
                    st.futures.discard(fut)
                    try:
                        if fut.cancelled():  # not by us: the scheduler or client went away
                            raise RuntimeError(
                                "its Dask task was cancelled (the scheduler restarted or the "
                                "connection to it was lost)"
                            )
                        st.done[k] = fut.result()
                        fut.release()
                        while st.next_write in st.done:  # in order (CSV, Parquet need it)
                            yk = st.done.pop(st.next_write)
                            start = st.ranges[st.next_write][0]
                            if flags:  # the sink calls of the local path (predict_file)
                                yk, fk = yk
                                for name, n in flag_counts(fk).items():
                                    st.counts[name] += n
                                st.sink.write(start, yk, fk)
                            else:
                                st.sink.write(start, yk)
                            st.rows += len(yk)
                            st.masked += int(np.isnan(yk[:, 0]).sum())  # NaN throughout
                            if progress is not None:
                                progress(len(yk))
                            st.next_write += 1
                        if st.next_write == len(st.ranges):
                            finish(st, None)
                            active.remove(st)
                    except Exception as e:  # noqa: BLE001 - the block's failure, per file
                        check_connected(e)
                        finish(st, e)
                        active.remove(st)
            except BaseException as e:  # Ctrl-C, lost scheduler: no half-written output
                for st in active:
                    if st.index not in results:
                        finish(st, e, tell=False)  # the run's error says it
                raise
            finally:
                with contextlib.suppress(Exception):  # the client may be gone
                    held.release()
    return [results[i] for i in sorted(results)]
