"""Ctrl-C during a fit, taken at a safe point.

Python raises ``KeyboardInterrupt`` wherever the interpreter happens to be when SIGINT
arrives. During a fit that is often inside NumPy's conversion of a JAX array (Keras turns
each epoch's logs into numbers), and NumPy's array coercion can swallow it: the interrupt
is lost (the run goes on and ends with exit 0) or turns into a 0-d object array that a
later callback trips over (``TypeError: iteration over a 0-d array``). So while
:func:`deferred` is active, SIGINT only sets a flag, and :class:`InterruptCheck` (a
callback, last in the list, after the resume backup) raises ``KeyboardInterrupt`` at the
next batch or epoch boundary. A second Ctrl-C raises at once.

Nothing is installed outside the main thread, or when SIGINT is not Python's default
handler (ignored in a background job, or someone else's handler): then nothing changes.

Example:
    >>> with deferred():                                      # doctest: +SKIP
    ...     model.fit(x, y, callbacks=[..., InterruptCheck()])
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import keras

__all__ = ["InterruptCheck", "check", "deferred", "watched"]


class _State:
    active = False
    pending = False


_state = _State()


def _raises(handler) -> bool:
    """True for Python's default SIGINT handler and for :func:`watched`'s."""
    return handler is signal.default_int_handler or getattr(handler, "_mlnnkit", False)


@contextlib.contextmanager
def watched() -> Iterator[list[bool]]:
    """SIGINT raises ``KeyboardInterrupt`` as usual, and is remembered: the yielded list
    holds ``True`` once a Ctrl-C arrived, even one that something swallowed (the CLI
    then still reports the interrupt). Nothing changes outside the main thread or when
    SIGINT is not Python's default handler."""
    seen: list[bool] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield seen
        return

    def handler(signum, frame):
        seen.append(True)
        raise KeyboardInterrupt

    handler._mlnnkit = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def check() -> None:
    """Raise ``KeyboardInterrupt`` when a Ctrl-C arrived during :func:`deferred`."""
    if _state.pending:
        _state.pending = False
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block SIGINT sets a flag that :func:`check` raises at a safe point; a
    Ctrl-C still pending when the block ends is raised then. Nested use is a no-op."""
    if (
        _state.active
        or threading.current_thread() is not threading.main_thread()
        or not _raises(signal.getsignal(signal.SIGINT))
    ):
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if _state.pending:  # the second Ctrl-C: now
            _state.pending = False
            previous(signum, frame)
            raise KeyboardInterrupt
        _state.pending = True

    _state.active, _state.pending = True, False
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _state.active = False
    check()


class InterruptCheck(keras.callbacks.Callback):
    """Raises a deferred Ctrl-C at the next epoch boundary (and, with ``batches=True``,
    batch boundary). Put it last, after the resume backup, so the epoch it ends is kept.

    Arguments:
        batches: check before every training batch too (Keras's own fit; a batch hook
            keeps a model off the fast path, whose epoch is one compiled call).
            Default ``False``.

    Example:
        >>> InterruptCheck(batches=True)                       # doctest: +ELLIPSIS
        <mlnnkit._interrupt.InterruptCheck object at ...>
    """

    def __init__(self, batches: bool = False):
        super().__init__()
        if batches:
            self.on_train_batch_begin = self._check_batch

    def _check_batch(self, batch, logs=None):
        check()

    def on_epoch_begin(self, epoch, logs=None):
        check()

    def on_epoch_end(self, epoch, logs=None):
        check()
