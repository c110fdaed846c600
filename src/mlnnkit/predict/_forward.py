# Over 400 lines: one compiled program and the worker threads feeding it are one mechanism.
"""Chunked, compiled inference of any Keras model over arrays of any size.

:func:`predict_array` runs a model's forward pass compiled once with XLA (``jax.jit`` over
``model.stateless_call``, in float32) on fixed-size chunks of rows and reuses the compiled
program for every chunk: the last, partial chunk is padded, so it never compiles again.
Worker threads prepare the next chunk (slicing, casting to float32, reading from a
memory map) while another chunk computes, so reading and computing overlap on every core.
Rows with NaN (or +-Inf) in any input give NaN outputs (masked pixels) and never fail.
A float64 model (e.g. a legacy network imported with ``--dtype float64`` because float32
cannot reproduce it closely enough) computes and returns float64 while JAX's 64-bit mode
is on, as its import leaves it.

:func:`predict_stream` is the same machinery fed block by block by a reader and drained by
a writer (both on their own threads): files larger than memory go through it with memory
bounded by a few blocks. ``mlnnkit predict`` (:mod:`mlnnkit.predict._files`) uses both.

Example:
    >>> import numpy as np, keras, mlnnkit
    >>> model = keras.Sequential([keras.Input((7,)), keras.layers.Dense(100, activation="tanh"),
    ...                           keras.layers.Dense(1)])
    >>> x = np.random.default_rng(0).normal(size=(100_000, 7)).astype("float32")
    >>> x[5, 2] = np.nan
    >>> y = mlnnkit.predict_array(model, x)
    >>> y.shape, bool(np.isnan(y[5, 0]))
    ((100000, 1), True)
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

from mlnnkit import _interrupt
from mlnnkit.errors import UserError
from mlnnkit.models import check_samples
from mlnnkit.models import sample_shape as _sample_shape

__all__ = ["Forward", "default_chunk_rows", "forward_for", "predict_array", "predict_stream"]

# Chunk-size heuristic (see `default_chunk_rows`): a chunk's data should stay near the
# cores while it flows from one compiled op to the next (chunks that fall out of cache run
# up to 2x slower), but a chunk must carry enough work to hide the cost of one call (~50-100
# us with the copies in and out). The working set is the compiled program's bytes accessed
# per row divided by its ops (fusions, dots): what one op reads and writes. Whole-program
# bytes made a five-network chain (85 ops) take 256-row chunks, ~1.15x slower than 4096.
# Calibrated on 2 Intel Xeon (AVX-512) cores and earlier on 2 AMD EPYC cores: best
# 4096 rows for the 111-111-57-111-107 tanh network, physical or not, flags or not, and
# for OC-SMART-style chains; 16384-32768 for 7-100-1.
_OP_BYTES_TARGET = 2.5 * (1 << 20)
_MIN_CHUNK_FLOPS = 2.5e7
_MIN_CHUNK_ROWS = 256
_MAX_CHUNK_ROWS = 65536


def _n_workers() -> int:
    """Threads that feed the compiled program: one per core (at least two), so while one
    thread slices, casts or copies its chunk, another chunk computes."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(2, cores)


@dataclass
class Forward:
    """A model's forward pass compiled for chunks of ``chunk_rows`` rows of ``dtype``.

    ``forward(params, x_chunk)`` returns the outputs (the model's output structure of
    arrays) for exactly ``chunk_rows`` rows; rows with a non-finite input give NaN
    outputs. Get one with :func:`forward_for` (cached per model, chunk size and dtype).
    """

    model: Any
    chunk_rows: int
    sample_shape: tuple[int, ...]
    dtype: type  # np.float32, or np.float64 for a float64 model in JAX's 64-bit mode
    fn: Callable
    output_struct: Any = None  # jax.ShapeDtypeStruct tree of one chunk's outputs

    def params(self):
        """The model's current variable values in ``dtype``, read at each predict call so
        a model trained or fine-tuned since the last call predicts with its new weights."""
        import jax.numpy as jnp

        def val(v):
            a = v.value
            return a.astype(self.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

        tv = [val(v) for v in self.model.trainable_variables]
        ntv = [val(v) for v in self.model.non_trainable_variables]
        return tv, ntv

    def __call__(self, params, x: np.ndarray):
        return self.fn(*params, x)


_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def compute_dtype(model) -> type:
    """float32, or float64 for a model with float64 weights while JAX's 64-bit mode is
    on (an imported network that float32 arithmetic cannot reproduce closely enough)."""
    import jax

    if jax.config.jax_enable_x64 and any("float64" in str(v.dtype) for v in model.weights):
        return np.float64
    return np.float32


# XLA options for the forward pass. XLA's CPU backend sends the dots of small dense
# networks to YNNPACK fusions by default; for the 111-111-57-111-107 tanh PACE network on
# 2 AVX-512 cores they ran 25-35% slower per CPU-second than XLA's own (Eigen) kernels
# (JAX 0.10.2; benchmarks/predict_speed.py, side by side with onnxruntime), and a 7-100-1
# network ran the same either way. Options this XLA does not know are dropped.
_XLA_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def _compiler_options() -> dict:
    import jax

    try:
        jax.jit(lambda x: x + 1, compiler_options=_XLA_OPTIONS).lower(1.0).compile()
    except Exception:  # noqa: BLE001 - an XLA (or backend) without these options
        return {}
    return dict(_XLA_OPTIONS)


def _make_fn(model, dtype):
    import jax
    import jax.numpy as jnp

    from mlnnkit.retrieval import is_chain

    # A chain sets the outputs of its invalid rows to NaN itself (ChainOutputs).
    masks = not is_chain(model)

    def fwd(tv, ntv, x):
        # Rows with a non-finite input are found here and their outputs set to NaN
        # afterwards; their values still flow through the layers (rows never mix in
        # inference), which costs less than cleaning the input first (~3%).
        y, _ = model.stateless_call(tv, ntv, x, training=False)
        if not masks:
            return y
        bad = ~jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)

        def mask(a):
            if not jnp.issubdtype(a.dtype, jnp.floating):
                return a  # e.g. the uint8 quality flags (they flag such rows themselves)
            a = a.astype(dtype)
            return jnp.where(bad.reshape((-1,) + (1,) * (a.ndim - 1)), jnp.nan, a)

        return jax.tree.map(mask, y)

    return jax.jit(fwd, compiler_options=_compiler_options() or None)


def forward_for(model, chunk_rows: int | None = None) -> Forward:
    """The compiled forward pass of ``model`` for chunks of ``chunk_rows`` rows (cached:
    one compilation per model, chunk size and dtype, shared by every later call).

    Args:
        model: a built ``keras.Model`` with one input tensor of fixed sample shape.
        chunk_rows: rows per compiled call; default :func:`default_chunk_rows`.
    """
    import jax

    sample_shape = _sample_shape(model)
    dtype = compute_dtype(model)
    with _LOCK:
        per_model = _FORWARDS.setdefault(model, {})
        if chunk_rows is None:
            chunk_rows = per_model.get(("default", dtype)) or default_chunk_rows(model)
            per_model[("default", dtype)] = chunk_rows
        chunk_rows = int(chunk_rows)
        if chunk_rows < 1:
            raise UserError(f"chunk_rows must be a positive number of rows, not {chunk_rows}")
        if (chunk_rows, dtype) in per_model:
            return per_model[(chunk_rows, dtype)]
        fn = per_model.get(("fn", dtype)) or _make_fn(model, dtype)
        per_model[("fn", dtype)] = fn
        fw = Forward(model, chunk_rows, sample_shape, dtype, fn)
        params = fw.params()
        fw.output_struct = jax.eval_shape(
            fn, *params, jax.ShapeDtypeStruct((chunk_rows, *sample_shape), dtype)
        )
        # Compile now (not in the first worker), so workers never race to compile.
        fw(params, np.zeros((chunk_rows, *sample_shape), dtype))
        per_model[(chunk_rows, dtype)] = fw
        return fw


def default_chunk_rows(model) -> int:
    """Rows per compiled call that keep each op's data in cache and a call's work well
    above its fixed cost, from XLA's own cost estimate of the compiled forward pass.

    For the 111-111-57-111-107 tanh network (and chains of such networks, flags
    included) this gives 4096 rows; for a 7-100-1 network, 16384. Compiling the estimate
    costs up to a second for a chain, once per model and process.

    Example:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((7,)), keras.layers.Dense(100, activation="tanh"),
        ...                         keras.layers.Dense(1)])
        >>> default_chunk_rows(net)
        16384
    """
    import jax

    sample_shape = _sample_shape(model)
    dtype = compute_dtype(model)
    probe = 1024
    fn = _make_fn(model, dtype)
    fw = Forward(model, probe, sample_shape, dtype, fn)
    try:
        lowered = fn.lower(*fw.params(), jax.ShapeDtypeStruct((probe, *sample_shape), dtype))
        flops = max(float(_cost(lowered).get("flops", 0.0)) / probe, 1.0)
        compiled = lowered.compile()
        nbytes = max(float(_cost(compiled).get("bytes accessed", 0.0)) / probe, 4.0)
        per_op = nbytes / _entry_ops(compiled.as_text())
    except Exception:  # noqa: BLE001 - a backend without cost analysis: plain default
        return 8192
    rows = max(_OP_BYTES_TARGET / per_op, _MIN_CHUNK_FLOPS / flops)
    rows = 1 << round(np.log2(max(rows, 1.0)))
    return int(min(max(rows, _MIN_CHUNK_ROWS), _MAX_CHUNK_ROWS))


def _cost(stage) -> dict:
    cost = stage.cost_analysis()
    if isinstance(cost, list):  # older JAX: one dict per computation
        cost = cost[0]
    return cost or {}


_NOT_OPS = ("parameter", "constant", "tuple", "get-tuple-element", "bitcast")


def _entry_ops(hlo_text: str) -> int:
    """The instructions of a compiled HLO module's entry computation that read and write
    memory (fusions, dots, copies, ...): not parameters, constants, tuples or bitcasts."""
    import re

    entry = hlo_text[hlo_text.find("\nENTRY") :]
    entry = entry[: entry.find("\n}")]
    kinds = re.findall(r"^\s*(?:ROOT )?%\S+ = \S+ ([\w-]+)\(", entry, flags=re.MULTILINE)
    return max(1, sum(k not in _NOT_OPS for k in kinds))


def _output_like(fw: Forward, n: int):
    import jax

    return jax.tree.map(lambda s: np.empty((n, *s.shape[1:]), s.dtype), fw.output_struct)


@dataclass
class _Block:
    """Rows ``x`` whose outputs go to ``out``; ``done`` is set when every chunk is in."""

    start: int
    x: Any
    out: Any
    buffer: Any = None  # the reusable output buffer ``out`` is a view of (streams)
    pending: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class _Workers:
    """Threads that compute the chunks of submitted blocks, one after the other with no
    pause between blocks: each slices, casts and copies its own chunk while the others
    compute, so reading and computing overlap on every core."""

    def __init__(self, fw: Forward, n: int, progress: Callable[[int], None] | None = None):
        self.fw = fw
        self.params = fw.params()  # the current weights, once per call
        self.progress = progress
        self.stop = threading.Event()
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, name=f"mlnnkit-predict-{i}", daemon=True)
            for i in range(max(1, n))
        ]
        for t in self.threads:
            t.start()

    def submit(self, block: _Block) -> _Block:
        n, c = len(block.x), self.fw.chunk_rows
        block.pending = -(-n // c)
        if n == 0:
            block.done.set()
        for i in range(0, n, c):
            self.tasks.put((block, i))
        return block

    def _run(self) -> None:
        import jax

        fw, c = self.fw, self.fw.chunk_rows
        while (item := self.tasks.get()) is not None:
            block, i = item
            m = 0
            if block.error is None and not self.stop.is_set():
                try:
                    m = min(c, len(block.x) - i)
                    if m == c:
                        xc = np.ascontiguousarray(block.x[i : i + c], dtype=fw.dtype)
                    else:  # a block's last chunk: padded to the compiled shape (no recompile)
                        xc = np.zeros((c, *fw.sample_shape), fw.dtype)
                        xc[:m] = block.x[i : i + m]
                    y = fw(self.params, xc)
                    for dst, src in zip(jax.tree.leaves(block.out), jax.tree.leaves(y)):
                        dst[i : i + m] = np.asarray(src)[:m]
                except BaseException as e:  # noqa: BLE001 - handed to whoever waits
                    block.error = block.error or e
                    m = 0
            if m and self.progress is not None:
                self.progress(m)
            with self.lock:
                block.pending -= 1
                last = block.pending == 0
            if last:
                block.done.set()

    def wait(self, block: _Block) -> None:
        """Wait for ``block``; raise its error (or a Ctrl-C deferred meanwhile)."""
        while not block.done.wait(0.1):
            _interrupt.check()
        _interrupt.check()
        if block.error is not None:
            raise block.error

    def close(self) -> None:
        self.stop.set()
        for _ in self.threads:
            self.tasks.put(None)
        for t in self.threads:
            t.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def predict_array(
    model,
    x,
    chunk_rows: int | None = None,
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    out=None,
    flags: bool = False,
    limit_margin: float = 0.02,
):
    """Predict ``model`` on every row of ``x``, chunk by chunk, with a compiled forward
    pass in float32 (float64 for a float64 model in JAX's 64-bit mode, see
    :func:`compute_dtype`).

    Args:
        model: any built ``keras.Model`` with one input tensor (e.g. an imported legacy
            network, or a model from ``mlnnkit train``).
        x: array-like of shape ``(rows, *sample_shape)``: a NumPy array, a memory map
            (``np.load(path, mmap_mode="r")``), or anything sliceable by rows; any float
            dtype (cast to float32 one chunk at a time).
        chunk_rows: rows per compiled call. Default: chosen from the model's size
            (:func:`default_chunk_rows`); the result does not depend on it.
        workers: threads feeding the compiled program (default: one per core, at least 2).
        progress: called with the number of rows finished after every chunk.
        out: where to write the outputs (an array of the result's shape and dtype, e.g.
            a ``np.lib.format.open_memmap`` of a ``.npy`` file); default: a new array.
            With ``flags``, a pair ``(outputs, flags)`` of such arrays.
        flags: also return the per-row ``uint8`` quality flags, computed in the same
            compiled program (:func:`mlnnkit.retrieval.flags_model`: inputs and outputs
            of every network against its ranges, the chain's scope test, invalid inputs).
            Default False.
        limit_margin: with ``flags``, the margin of ``output_at_limit`` in the network's
            own variables (default 0.02, C2RCC's).

    Returns:
        ``numpy.ndarray`` of shape ``(rows, *output_shape)``, float32 (or the model's
        output structure of such arrays). Rows with NaN or +-Inf in any input are NaN.
        With ``flags``: ``(outputs, flags)``, flags of shape ``(rows,)``, ``uint8``.

    Example:
        >>> model = mlnnkit.load_model("net.keras")
        >>> y = mlnnkit.predict_array(model, np.load("rows.npy", mmap_mode="r"))
        >>> y.shape, y.dtype
        ((100, 1), dtype('float32'))
    """
    if flags:
        from mlnnkit.retrieval import flags_model

        y, f = predict_array(
            flags_model(model, limit_margin), x, chunk_rows, workers=workers,
            progress=progress, out=list(out) if out is not None else None,
        )  # fmt: skip
        return y, f
    fw = forward_for(model, chunk_rows)
    if not hasattr(x, "shape") or not hasattr(x, "__getitem__"):
        x = np.asarray(x, dtype=np.float32)
    check_samples(fw.sample_shape, x)
    if out is None:
        out = _output_like(fw, len(x))
    else:
        import jax

        want = jax.tree.map(lambda a: ((len(x), *a.shape[1:]), a.dtype), fw.output_struct)
        got = jax.tree.map(lambda a: (tuple(a.shape), a.dtype), out)
        if got != want:
            raise UserError(f"out must be {want} (shape, dtype), not {got}")
    n_chunks = -(-len(x) // fw.chunk_rows)
    with _Workers(fw, min(workers or _n_workers(), n_chunks), progress) as pool:
        pool.wait(pool.submit(_Block(0, x, out)))
    return out


def predict_stream(
    model,
    blocks: Iterator[tuple[int, np.ndarray]],
    write: Callable[[int, Any], None],
    *,
    chunk_rows: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    depth: int = 2,
) -> int:
    """Predict block after block from ``blocks`` (``(start_row, x_block)`` pairs) and hand
    each block's outputs to ``write(start_row, y_block)``, in order, on the calling thread.

    A reader thread pulls blocks from ``blocks`` ahead of the computation, the worker
    threads go from one block's chunks to the next without waiting, and finished blocks
    are written while later ones compute. At most ``depth + 2`` blocks are in flight and
    their output buffers are reused, so memory stays bounded by a few blocks whatever the
    number of rows. ``blocks`` runs on one thread and ``write`` on another (each on one
    thread only: file libraries such as netCDF4 are not thread-safe); ``y_block`` is only
    valid during the call. Returns the number of rows done.

    Example:
        >>> model = keras.Sequential([keras.Input((7,)), keras.layers.Dense(1)])
        >>> x = np.ones((10_000, 7), "float32")
        >>> out = np.empty((len(x), 1), "float32")
        >>> def write(i, y):
        ...     out[i : i + len(y)] = y
        >>> predict_stream(model, blocks_of(x, 4096), write)
        10000
    """
    import jax

    fw = forward_for(model, chunk_rows)
    end = object()
    ordered: queue.Queue = queue.Queue()  # submitted blocks, in order
    free: queue.Queue = queue.Queue()  # output buffers to reuse (None: allocate)
    for _ in range(depth + 2):
        free.put(None)
    failed: list[BaseException] = []
    pool = _Workers(fw, workers or _n_workers(), progress)

    def reader() -> None:
        try:
            for start, xb in blocks:
                if pool.stop.is_set():
                    return
                check_samples(fw.sample_shape, xb)
                buf = None
                while not pool.stop.is_set():
                    try:
                        buf = free.get(timeout=0.1)
                        break
                    except queue.Empty:
                        continue
                if pool.stop.is_set():
                    return
                if buf is None or len(jax.tree.leaves(buf)[0]) < len(xb):
                    buf = _output_like(fw, len(xb))
                n = len(xb)
                out = jax.tree.map(lambda a: a[:n], buf)  # noqa: B023 - used at once
                ordered.put(pool.submit(_Block(start, xb, out, buf)))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            failed.append(e)
        finally:
            ordered.put(end)

    thread = threading.Thread(target=reader, name="mlnnkit-predict-reader", daemon=True)
    thread.start()
    rows = 0

    def next_block():
        while True:
            try:
                return ordered.get(timeout=0.1)
            except queue.Empty:
                _interrupt.check()

    try:
        while (block := next_block()) is not end:
            pool.wait(block)
            write(block.start, block.out)
            rows += len(block.x)
            free.put(block.buffer)
        if failed:
            raise failed[0]
    finally:
        pool.close()  # stops the reader too, if it is waiting for a buffer
        thread.join()
    return rows


def blocks_of(x, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, x[start:start + block_rows])`` for every block of rows of ``x``."""
    for i in range(0, len(x), block_rows):
        yield i, x[i : i + block_rows]

