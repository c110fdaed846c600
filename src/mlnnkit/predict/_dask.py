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
``processes=False``); with one (``tcp://host:8786``), on that dask.distributed cluster,
whose workers must see the same files and have mlnnkit installed. The model is sent to
every worker once (``Client.scatter``) and compiled there once.

Example:
    >>> from mlnnkit.predict import predict_files_dask
    >>> jobs = plan_jobs(["scenes/*.nc"], "outdir/")  # doctest: +SKIP
    >>> results = predict_files_dask(model, jobs, address="tcp://10.0.0.5:8786")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlnnkit import _atomic
from mlnnkit.errors import UserError
from mlnnkit.models import model_io_sizes
from mlnnkit.predict._base import Source
from mlnnkit.predict._files import FileResult, error_text, prepare
from mlnnkit.predict._kinds import flags_sibling, open_sink, open_source


def _block_task(model, path: str, n_inputs: int, columns: list[str], start: int, stop: int,
                chunk_rows: int | None, flags: bool = False,
                limit_margin: float = 0.02):  # fmt: skip
    """One task: read rows ``start:stop`` of ``path`` and predict them (on a worker);
    with ``flags``, ``(outputs, quality flags)`` from one compiled program."""
    from mlnnkit.predict._forward import predict_array

    source = open_source(path, n_inputs, None if Path(path).suffix == ".npy" else columns)
    try:
        x = source.read(start, stop)
    finally:
        source.close()
    if flags:
        y, f = predict_array(model, x, chunk_rows, workers=1, flags=True, limit_margin=limit_margin)
        return y.reshape(len(y), -1), f
    y = predict_array(model, x, chunk_rows, workers=1)
    return y.reshape(len(y), -1)


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
    flag_counts: dict | None = None


@contextlib.contextmanager
def dask_client(address=None):
    """A ``distributed.Client``: on ``address`` (a scheduler address, a ``Client`` or a
    cluster), or on an in-process cluster of local threads when ``address`` is None."""
    from distributed import Client, LocalCluster

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
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise UserError(
            f"cannot reach the Dask scheduler at {address}: {' '.join(str(e).split())}"
        ) from None
    with client:
        yield client


def predict_files_dask(
    model,
    jobs: Sequence[tuple[Path, Path]],
    *,
    address=None,
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
    """Predict every ``(input, output)`` job as Dask tasks; same arguments and results as
    :func:`mlnnkit.predict.predict_files`, plus ``address`` (see :func:`dask_client`)
    and ``tasks_per_thread`` (tasks in flight per worker thread: bounds the memory);
    ``flags`` and ``limit_margin`` as in :func:`mlnnkit.predict.predict_file`."""
    from distributed import as_completed

    from mlnnkit.predict._forward import compute_dtype

    n_in, _ = model_io_sizes(model)
    dtype = compute_dtype(model)
    results: dict[int, FileResult] = {}

    def finish(st: _FileState, exc: BaseException | None) -> None:
        for f in st.futures:
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
            flag_counts=st.flag_counts if exc is None else None,
        )  # fmt: skip
        results[st.index] = r
        if on_done is not None:
            on_done(r)

    with dask_client(address) as client:
        nthreads = max(1, sum(client.nthreads().values()))
        window = max(2, tasks_per_thread * nthreads)
        model_f = client.scatter(model, broadcast=True, hash=False)
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
                        model, src, dst, inputs=inputs, outputs=outputs, flags=flags
                    )
                except Exception as e:  # noqa: BLE001 - reported per file
                    r = FileResult(Path(src), Path(dst), 0, 0, 0.0, error=error_text(e))
                    results[i] = r
                    if on_done is not None:
                        on_done(r)
                    continue
                stack = contextlib.ExitStack()
                try:
                    tmp = stack.enter_context(_atomic.atomic_path(dst))
                    flag_cf = tmp_flags = None
                    if flags:
                        from mlnnkit.retrieval import flag_attrs

                        flag_cf = flag_attrs()
                        sibling = flags_sibling(out_kind, dst)
                        if sibling is not None:
                            tmp_flags = stack.enter_context(_atomic.atomic_path(sibling))
                    sink = open_sink(tmp, out_kind, source, names, attrs, dtype,
                                     flags=flag_cf, flags_path=tmp_flags)  # fmt: skip
                except Exception as e:  # noqa: BLE001
                    stack.__exit__(type(e), e, e.__traceback__)
                    source.close()
                    r = FileResult(Path(src), Path(dst), 0, 0, 0.0, error=error_text(e))
                    results[i] = r
                    if on_done is not None:
                        on_done(r)
                    continue
                if on_open is not None:
                    on_open(source)
                st = _FileState(i, Path(src), Path(dst), source, sink, stack,
                                source.ranges(block_rows), t0)  # fmt: skip
                if flags:
                    from mlnnkit.retrieval import FLAG_BITS

                    st.flag_counts = {n: 0 for n, _, _ in FLAG_BITS}
                active.append(st)
                if not st.ranges:
                    finish(st, None)
                    active.remove(st)
                    continue
                return True
            return False

        def submit_more() -> None:
            nonlocal in_flight
            while in_flight < window:
                st = next((s for s in active if s.submitted < len(s.ranges)), None)
                if st is None:
                    if not open_next():
                        return
                    continue
                k = st.submitted
                a, b = st.ranges[k]
                fut = client.submit(
                    _block_task, model_f, str(st.source.path), n_in, st.source.columns,
                    a, b, chunk_rows, flags, limit_margin, pure=False,
                )  # fmt: skip
                st.submitted += 1
                st.futures.add(fut)
                where[fut] = (st, k)
                ac.add(fut)
                in_flight += 1

        while True:
            submit_more()
            if in_flight == 0:
                break
            fut = next(ac)
            in_flight -= 1
            st, k = where.pop(fut)
            st.futures.discard(fut)
            if st.index in results or fut.cancelled():  # its file already failed
                continue
            try:
                st.done[k] = fut.result()
                while st.next_write in st.done:  # write in order (CSV, Parquet need it)
                    yk = st.done.pop(st.next_write)
                    if flags:
                        from mlnnkit.retrieval import flag_counts

                        yk, fk = yk
                        for name, n in flag_counts(fk).items():
                            st.flag_counts[name] += n
                        st.sink.write(st.ranges[st.next_write][0], yk, fk)
                    else:
                        st.sink.write(st.ranges[st.next_write][0], yk)
                    st.rows += len(yk)
                    st.masked += int(np.isnan(yk[:, 0]).sum())  # masked rows: NaN throughout
                    if progress is not None:
                        progress(len(yk))
                    st.next_write += 1
                if st.next_write == len(st.ranges):
                    finish(st, None)
                    active.remove(st)
            except Exception as e:  # noqa: BLE001 - the block's failure, reported per file
                finish(st, e)
                active.remove(st)
    return [results[i] for i in sorted(results)]
