# Over 400 lines: one compiled epoch loop (checks, programs, the loop); private names: _compat.
"""The fast fit path: a whole training epoch in one compiled JAX call.

``model.fit`` on JAX dispatches one compiled ``train_step`` per batch from Python; for the
small networks this package trains (a few 100k weights, batch 32) that dispatch, the
per-batch data slicing and the per-batch synchronisation cost more than the arithmetic.
This module runs the *same* Keras step — ``model.train_step(state, (x, y))``, i.e. the
model's ``stateless_call``, its compiled loss, ``optimizer.stateless_apply`` and the
metrics' stateless updates — inside one ``jax.lax.scan`` over all batches of an epoch,
compiled once for every epoch of the fit. Between epochs the state goes back into the
model's variables, so everything that happens at epoch level behaves as with
``model.fit``: the same model object, a real ``keras.callbacks.History``, the progress
line, validation metrics, and the epoch-level callbacks (``EarlyStopping`` with
``restore_best_weights``, ``ModelCheckpoint``/``AtomicModelCheckpoint``,
``ReduceLROnPlateau`` and ``LearningRateScheduler`` — the learning rate is an optimizer
variable, so a new value is an input of the next epoch, not a recompile —, ``CSVLogger``,
``BackupAndRestore``, ``model.stop_training``).

Keras's meaning is kept in the details too: batches are drawn from one
``np.random.permutation`` per epoch like Keras's array adapter (so seeded runs shuffle
identically), dropout uses the layers' own seed generators, and the last partial batch
is a smaller batch, not dropped.

Where the time goes, and what this module does about it (seed network, batch 32, 2
cores): the two matrix products of a step and Adam's three passes over the 100k weights
are most of it. The epoch program is compiled once per fit (about a second) and kept in
an on-disk cache (:mod:`mlnnkit._compile_cache`), so later runs of the same program load
it in milliseconds; XLA is asked for 512-bit vector code on AVX-512 machines and to keep
the small matrix products on its multi-threaded Eigen kernels (:func:`_compiler_options`);
the batch rows are gathered inside the step from the training array, which JAX uses in
place when it is 64-byte aligned (mlnnkit's loaders make it so) — a whole-epoch
pre-shuffled copy measured slower than the per-step gather.

What the fast path does not support goes to ``model.fit``: :func:`select` returns
``None`` (and :func:`unsupported_reason` says why) for layers outside
:data:`SUPPORTED_LAYERS`, callbacks with batch-level hooks, sample weights, non-float32
models, distribution, ``run_eagerly``... ``mlnnkit.train.fit`` is the only caller and
records which engine ran.

Example:
    >>> from mlnnkit import fastfit
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile("adam", "mse")
    >>> x, y = np.ones((64, 3), "float32"), np.zeros((64, 1), "float32")
    >>> runner = fastfit.select(model, [])        # None -> use model.fit
    >>> history = runner(model, x, y, epochs=2, batch_size=32, validation_data=None,
    ...                  callbacks=[], shuffle=True, verbose=0)
    >>> len(history.history["loss"])
    2
"""

from __future__ import annotations

import logging
import time
from typing import Any

import keras
import numpy as np

from mlnnkit import _compat

log = logging.getLogger(__name__)

__all__ = ["SUPPORTED_LAYERS", "FastRunner", "select", "unsupported_reason"]

#: Keras layer classes the fast path runs (exact classes; mlnnkit's own layers are added
#: by :func:`supported_layer_classes`).
SUPPORTED_LAYERS: tuple[type, ...] = (
    keras.layers.InputLayer,
    keras.layers.Dense,
    keras.layers.Dropout,
    keras.layers.Flatten,
    keras.layers.Normalization,
    keras.layers.Activation,
    keras.layers.Reshape,
    keras.layers.Rescaling,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.Softmax,
    keras.layers.GaussianNoise,
)

# Callbacks whose only work is at epoch level (or that the loop drives itself).
_EPOCH_LEVEL_CALLBACKS: tuple[type, ...] = (
    keras.callbacks.History,
    keras.callbacks.EarlyStopping,
    keras.callbacks.ReduceLROnPlateau,
    keras.callbacks.CSVLogger,
    keras.callbacks.LearningRateScheduler,
)
# Callbacks that work per epoch when their save frequency is "epoch".
_SAVE_FREQ_CALLBACKS: tuple[type, ...] = (
    keras.callbacks.ModelCheckpoint,
    keras.callbacks.BackupAndRestore,
)
_BATCH_HOOKS = (
    "on_batch_begin",
    "on_batch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_batch_begin",
    "on_test_batch_end",
)


def supported_layer_classes() -> tuple[type, ...]:
    """:data:`SUPPORTED_LAYERS` plus mlnnkit's own layers (``mlnnkit.layers``)."""
    own: list[type] = []
    try:
        from mlnnkit import layers as mlnnkit_layers
    except ImportError:
        return SUPPORTED_LAYERS
    for name in getattr(mlnnkit_layers, "__all__", []):
        obj = getattr(mlnnkit_layers, name, None)
        if isinstance(obj, type) and issubclass(obj, keras.layers.Layer):
            own.append(obj)
    return SUPPORTED_LAYERS + tuple(own)


def _callback_reason(cb: keras.callbacks.Callback) -> str | None:
    cls = type(cb)
    if isinstance(cb, _SAVE_FREQ_CALLBACKS):
        freq = getattr(cb, "save_freq", "epoch")
        if freq != "epoch":
            return f"{cls.__name__} saves every {freq} batches (batch-level)"
        base = next(b for b in _SAVE_FREQ_CALLBACKS if isinstance(cb, b))
        if not _own_hooks_only(cb, base):
            return f"callback {cls.__name__} overrides batch-level hooks"
        return None
    if cls in _EPOCH_LEVEL_CALLBACKS:
        return None
    if isinstance(cb, keras.callbacks.LambdaCallback):
        for hook in _BATCH_HOOKS:
            if hook in cb.__dict__:
                return f"LambdaCallback with {hook}"
        return None
    if isinstance(
        cb,
        (
            keras.callbacks.ProgbarLogger,
            keras.callbacks.TensorBoard,
            keras.callbacks.TerminateOnNaN,
            keras.callbacks.RemoteMonitor,
            keras.callbacks.SwapEMAWeights,
        ),
    ):
        return f"callback {cls.__name__} works per batch"
    if isinstance(cb, keras.callbacks.CallbackList):
        return "a CallbackList"
    if not _own_hooks_only(cb, keras.callbacks.Callback):
        return f"callback {cls.__name__} has batch-level hooks"
    return None


def _own_hooks_only(cb: keras.callbacks.Callback, base: type) -> bool:
    """True when ``cb``'s class overrides none of the batch hooks of ``base``."""
    for hook in _BATCH_HOOKS:
        if getattr(type(cb), hook, None) is not getattr(base, hook, None):
            return False
    return True


def unsupported_reason(
    model: keras.Model,
    callbacks: list[keras.callbacks.Callback] | None = None,
    x: Any = None,
    y: Any = None,
    validation_data: Any = None,
) -> str | None:
    """Why the fast path cannot run this fit (``None`` when it can).

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        >>> model.compile("adam", "mse")
        >>> unsupported_reason(model, [keras.callbacks.TensorBoard()])
        'callback TensorBoard works per batch'
    """
    if keras.backend.backend() != "jax":
        return f"the Keras backend is {keras.backend.backend()!r}, not 'jax'"
    why = _compat.version_reason()
    if why:
        return why
    if not isinstance(model, keras.Model):
        return "not a keras.Model"
    if not getattr(model, "compiled", False) or model.optimizer is None:
        return "the model is not compiled"
    if type(model) not in (keras.Sequential, keras.Model) and type(model).__name__ != "Functional":
        return f"model class {type(model).__name__} (only Sequential/functional models)"
    if getattr(model, "run_eagerly", False) or getattr(model, "jit_compile", True) is False:
        return "the model is compiled with run_eagerly=True or jit_compile=False"
    if keras.distribution.distribution() is not None:
        return "a keras.distribution is set"
    if model.dtype_policy.name != "float32":
        return f"dtype policy {model.dtype_policy.name!r} (the fast path is float32)"
    if not _compat.is_keras_class(model.optimizer):
        return f"optimizer {type(model.optimizer).__name__} is not one of Keras's"
    if getattr(model.optimizer, "use_ema", False):
        return "the optimizer uses EMA weights"
    if getattr(model.optimizer, "gradient_accumulation_steps", None):
        return "the optimizer accumulates gradients"
    if len(getattr(model, "inputs", None) or []) != 1 or len(getattr(model, "outputs", None) or []) != 1:
        return "the model needs exactly one input and one output"
    allowed = supported_layer_classes()
    for layer in _compat.flatten_layers(model, include_self=False):
        if type(layer) not in allowed:
            return f"layer {layer.name} ({type(layer).__name__}) is not supported"
        if layer.metrics:
            return f"layer {layer.name} has its own metrics"
        if layer.dtype_policy.name != "float32":
            return f"layer {layer.name} computes in {layer.dtype_policy.name} (the fast path is float32)"
    for cb in callbacks or []:
        why = _callback_reason(cb)
        if why:
            return why
    for name, arr in (("x", x), ("y", y)):
        if arr is not None and not isinstance(arr, np.ndarray):
            return f"{name} is a {type(arr).__name__}, not a NumPy array"
    if x is not None and not np.issubdtype(x.dtype, np.floating):
        return f"x has dtype {x.dtype} (the fast path takes float inputs)"
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            return "validation_data is not an (x, y) pair"
        vx, vy = validation_data
        if not isinstance(vx, np.ndarray) or not isinstance(vy, np.ndarray):
            return "validation_data is not NumPy arrays"
        if not np.issubdtype(vx.dtype, np.floating):
            return f"validation x has dtype {vx.dtype}"
    return None


def select(
    model: keras.Model,
    callbacks: list[keras.callbacks.Callback] | None = None,
    engine: str = "auto",
    **data: Any,
) -> FastRunner | None:
    """A runner for this model and callbacks, or ``None`` to use ``model.fit``.

    ``engine="keras"`` always gives ``None``. ``data`` may hold ``x``, ``y`` and
    ``validation_data`` to check them too.
    """
    if engine == "keras":
        return None
    if unsupported_reason(model, callbacks, **data) is not None:
        return None
    return FastRunner()


# --------------------------------------------------------------------------- the loop
def _compiler_options() -> dict[str, Any]:
    """XLA options for the epoch programs (measured on the seed's network, 2 cores).

    - ``xla_cpu_experimental_ynn_fusion_type = ""``: leave the step's small matrix
      products (32 x 784 x 128) to XLA's Eigen kernels, which split them over the
      cores; the default YNNPACK kernels run them on one core.
    - ``xla_cpu_prefer_vector_width = 512`` where the CPU has AVX-512: the optimizer
      updates are long elementwise loops; 512-bit code runs an epoch ~13% faster.

    :func:`mlnnkit._compile_cache.compile_cached` drops options this XLA does not know.
    """
    opts: dict[str, Any] = {"xla_cpu_experimental_ynn_fusion_type": ""}
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    if " avx512f" in flags:
        opts["xla_cpu_prefer_vector_width"] = 512
    return opts


def _split(n: int, batch_size: int) -> tuple[int, int]:
    """(number of full batches, size of the last partial batch or 0)."""
    return n // batch_size, n % batch_size


def _full_batches(step, state, x_all, y_all, batch_size: int, order=None):
    """``step(state, x, y)`` over every full batch of (x_all, y_all), as one ``lax.scan``.

    Batches are contiguous slices, or the rows ``order[i*bs:(i+1)*bs]`` when an order
    (the epoch's permutation) is given: the rows are gathered inside the step.
    """
    import jax.numpy as jnp
    from jax import lax

    full, _rest = _split(x_all.shape[0], batch_size)
    if not full:
        return state
    bs = batch_size
    if order is None:
        def body(state, i):
            x = lax.dynamic_slice_in_dim(x_all, i * bs, bs)
            y = lax.dynamic_slice_in_dim(y_all, i * bs, bs)
            return step(state, x, y), None

        state, _ = lax.scan(body, state, jnp.arange(full, dtype="int32"))
        return state

    def gather_body(state, idx):
        return step(state, x_all[idx], y_all[idx]), None

    state, _ = lax.scan(gather_body, state, order[: full * bs].reshape(full, bs))
    return state


def _last_batch(step, state, x_all, y_all, batch_size: int, order=None):
    """``step`` on the last, partial batch (Keras's semantics: smaller, not dropped)."""
    full, rest = _split(x_all.shape[0], batch_size)
    if not rest:
        return state
    if order is None:
        return step(state, x_all[full * batch_size :], y_all[full * batch_size :])
    idx = order[full * batch_size :]
    return step(state, x_all[idx], y_all[idx])


class _Programs:
    """The compiled programs of one fit call: the epoch's full batches (one ``lax.scan``),
    its last partial batch, and the evaluation of the validation data.

    Each is compiled once (or loaded from :mod:`mlnnkit._compile_cache`) on first use
    and reused for every epoch: the learning rate, the shuffling order and all weights
    are inputs, so nothing an epoch-level callback changes needs a recompile. The
    partial batch is a separate program because it is a second trace of the step (it
    would nearly double the epoch program's compile time); JAX runs the scan
    asynchronously, so it is compiled while the first epoch's full batches train.
    """

    def __init__(self, model: keras.Model, batch_size: int):
        import jax

        def train_step(state, x, y):
            _logs, state = model.train_step(state, (x, y))
            return state

        def test_step(state, x, y):
            _logs, state = model.test_step(state, (x, y))
            return state

        def results(state):
            # The metrics' results (Keras's epoch logs) computed in the program, from the
            # metric variables of the final state (the last entry of the state tuple).
            mapping = list(zip(model.metrics_variables, state[-1]))
            with keras.StatelessScope(state_mapping=mapping):
                return state, model.get_metrics_result()

        def full(state, x_all, y_all, order):
            return results(_full_batches(train_step, state, x_all, y_all, batch_size, order))

        def last(state, x_all, y_all, order):
            return results(_last_batch(train_step, state, x_all, y_all, batch_size, order))

        def evaluate(state, x_all, y_all):
            state = _full_batches(test_step, state, x_all, y_all, batch_size)
            return results(_last_batch(test_step, state, x_all, y_all, batch_size))

        self.batch_size = batch_size
        self._jitted = {"train": jax.jit(full), "last": jax.jit(last), "eval": jax.jit(evaluate)}
        self._compiled: dict[str, Any] = {}

    def prepare(self, needed: dict[str, tuple]) -> None:
        """Lower the ``needed`` programs (name -> example arguments), then compile them
        side by side: XLA compiles one program mostly on one core, so two or three
        programs compile in about the time of one on a 2-core machine."""
        from concurrent.futures import ThreadPoolExecutor

        from mlnnkit._compile_cache import compile_cached

        todo = {k: a for k, a in needed.items() if k not in self._compiled}
        if not todo:
            return
        t0 = time.perf_counter()
        with _compat.unrolled_threefry():  # tracing is Python: one program after the other
            lowered = {k: self._jitted[k].lower(*a) for k, a in todo.items()}
        t1 = time.perf_counter()
        opts = _compiler_options()
        names = list(lowered)
        with ThreadPoolExecutor(max_workers=max(1, len(names) - 1)) as pool:
            futures = {k: pool.submit(compile_cached, lowered[k], opts) for k in names[1:]}
            self._compiled[names[0]] = compile_cached(lowered[names[0]], opts)
            for k, fut in futures.items():
                self._compiled[k] = fut.result()
        log.debug(
            "programs %s: traced and lowered in %.3f s, compiled/loaded in %.3f s",
            names, t1 - t0, time.perf_counter() - t1,
        )

    def _run(self, name: str, *args):
        if name not in self._compiled:
            self.prepare({name: args})
        return self._compiled[name](*args)

    def needed(self, state, x_all, y_all, order, val=None, eval_state=None) -> dict[str, tuple]:
        """The programs a fit will run, with example arguments."""
        full, rest = _split(x_all.shape[0], self.batch_size)
        out: dict[str, tuple] = {}
        if full:
            out["train"] = (state, x_all, y_all, order)
        if rest:
            out["last"] = (state, x_all, y_all, order)
        if val is not None:
            out["eval"] = (eval_state, *val)
        return out

    def train_epoch(self, state, x_all, y_all, order):
        """(state, logs) after one epoch."""
        full, rest = _split(x_all.shape[0], self.batch_size)
        logs = None
        if full:
            state, logs = self._run("train", state, x_all, y_all, order)
        if rest:
            state, logs = self._run("last", state, x_all, y_all, order)
        return state, logs

    def evaluate(self, state, x_all, y_all):
        """(state, logs) after Keras's ``test_step`` over all batches of (x, y)."""
        return self._run("eval", state, x_all, y_all)


def _on_device(a: np.ndarray, dtype=None):
    """``a`` as a JAX array, without a copy when it is C-contiguous and 64-byte aligned.

    A large training set (Fashion-MNIST is 188 MB in float32) would otherwise be copied
    at every fit; mlnnkit's loaders hand out aligned arrays (``data.aligned_empty``), and
    anything else is copied once into an aligned buffer (faster than JAX's own copy).
    """
    import jax

    from mlnnkit.data import ALIGNMENT, aligned_empty

    a = np.asarray(a, dtype=dtype)
    if not a.flags.c_contiguous or a.ctypes.data % ALIGNMENT:
        b = aligned_empty(a.shape, a.dtype)
        np.copyto(b, a)
        a = b
    try:
        return jax.device_put(a, may_alias=True)
    except TypeError:  # a JAX without may_alias: let it copy
        return jax.device_put(a)


def _values(variables) -> list:
    return [v.value for v in variables]


def _assign(variables, values) -> None:
    for ref, val in zip(variables, values):
        ref.assign(val)


class FastRunner:
    """``fit`` with each epoch compiled as one call; returns the ``History`` like Keras.

    Arguments are those of ``model.fit`` (arrays only, no sample weights). The epoch
    loop mirrors Keras's JAX trainer: reset metrics, ``on_epoch_begin``, the epoch,
    validation (``on_test_begin``/``on_test_end``), ``on_epoch_end``,
    ``model.stop_training``; ``on_train_begin`` may set ``model._initial_epoch``
    (``BackupAndRestore``).
    """

    def __call__(
        self,
        model: keras.Model,
        x: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int,
        batch_size: int | None = 32,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        callbacks: list[keras.callbacks.Callback] | None = None,
        shuffle: bool = True,
        verbose: int | str = "auto",
        initial_epoch: int = 0,
    ) -> keras.callbacks.History:
        import jax.numpy as jnp

        in_dtype = keras.backend.standardize_dtype(model.inputs[0].dtype)
        x = np.asarray(x, dtype=in_dtype)
        y = np.asarray(y)
        n = len(x)
        if n == 0:
            raise ValueError("the training data has no rows")
        if len(y) != n:
            raise ValueError(f"x has {n} rows but y has {len(y)}")
        batch_size = int(batch_size or 32)
        shuffle = bool(shuffle)
        self._build(model, x, y, shuffle)

        full, rest = _split(n, batch_size)
        cbs = keras.callbacks.CallbackList(
            callbacks,
            add_history=True,
            add_progbar=verbose != 0,
            verbose=verbose,
            epochs=epochs,
            steps=full + (1 if rest else 0),
            model=model,
        )
        history = next(c for c in cbs.callbacks if isinstance(c, keras.callbacks.History))
        t0 = time.perf_counter()
        x_dev, y_dev = _on_device(x), _on_device(y)
        val = None
        if validation_data is not None:
            vx, vy = validation_data
            val = (_on_device(vx, in_dtype), _on_device(vy))
        programs = _Programs(model, batch_size)
        log.debug("data on device in %.3f s", time.perf_counter() - t0)

        model.stop_training = False
        training_logs: dict = {}
        cbs.on_train_begin()
        first = _compat.initial_epoch(model) or initial_epoch
        for epoch in range(first, epochs):
            model.reset_metrics()
            cbs.on_epoch_begin(epoch)
            # One permutation per epoch from NumPy's global generator, as Keras's array
            # adapter draws it: seeded runs shuffle exactly as model.fit does.
            order = jnp.asarray(np.random.permutation(n).astype("int32")) if shuffle else None
            state = (
                _values(model.trainable_variables),
                _values(model.non_trainable_variables),
                _values(model.optimizer.variables),
                _values(model.metrics_variables),
            )
            t0 = time.perf_counter()
            if epoch == first:  # compile what the fit needs, side by side
                eval_state = (state[0], state[1], state[3])
                programs.prepare(programs.needed(state, x_dev, y_dev, order, val, eval_state))
            (tv, ntv, ov, mv), logs = programs.train_epoch(state, x_dev, y_dev, order)
            _assign(model.trainable_variables, tv)
            _assign(model.non_trainable_variables, ntv)
            _assign(model.optimizer.variables, ov)
            _assign(model.metrics_variables, mv)
            epoch_logs = dict(logs)
            if log.isEnabledFor(logging.DEBUG):
                keras.ops.convert_to_numpy(mv[0])  # wait for the epoch to finish
                log.debug("epoch %d: %.3f s", epoch, time.perf_counter() - t0)
            if val is not None:
                epoch_logs.update(self._validate(model, programs, cbs, val))
            cbs.on_epoch_end(epoch, epoch_logs)
            training_logs = epoch_logs
            if model.stop_training:
                break
        if epochs > 0:
            model.optimizer.finalize_variable_values(model.trainable_weights)
        cbs.on_train_end(logs=training_logs)
        return history

    @staticmethod
    def _build(model: keras.Model, x: np.ndarray, y: np.ndarray, shuffle: bool) -> None:
        """Build model, compiled loss/metrics and optimizer as ``model.fit`` does."""
        loss, metrics = _compat.compiled_loss_and_metrics(model)
        unbuilt = (
            not all(layer.built for layer in _compat.flatten_layers(model))
            or (metrics is not None and not metrics.built)
            or (loss is not None and not loss.built)
        )
        if unbuilt:
            _compat.symbolic_build(model, x[:1], y[:1])
            if shuffle:
                # model.fit builds from the first batch of a shuffled epoch, which draws
                # one permutation: draw it too, so seeded runs shuffle identically.
                np.random.permutation(len(x))
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)

    @staticmethod
    def _validate(model: keras.Model, programs: _Programs, cbs, val) -> dict[str, Any]:
        model.reset_metrics()
        cbs.on_test_begin()
        state = (
            _values(model.trainable_variables),
            _values(model.non_trainable_variables),
            _values(model.metrics_variables),
        )
        (_tv, _ntv, mv), logs = programs.evaluate(state, *val)
        _assign(model.metrics_variables, mv)
        logs = dict(logs)
        cbs.on_test_end(logs)
        return {f"val_{k}": v for k, v in logs.items()}
