"""The `mlnnkit` command line: thin wrappers that parse, call the library, map errors.

Every command lives in its own module of this package and registers itself on the one
Typer app in :mod:`mlnnkit.cli._app`. Errors: a :class:`mlnnkit.errors.MlnnkitError` or a
usage error prints one line ``error: ...`` on stderr and exits 2 (``VerificationError``
exits 1); ``--debug`` adds the traceback. Ctrl-C prints one line ``error: interrupted``
(with how to continue, for the commands that can) and exits 130. The library's notes (``mlnnkit.notes``, e.g.
float64 switched on) print as ``note: ...`` lines.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import traceback

# Command modules (each registers its commands on `app`).
# Command modules register their commands on `app`; the order here is the order of
# `mlnnkit --help`: the training workflow first, then legacy networks, inference,
# adaptation and tuning.
# isort: off
from mlnnkit.cli import train as _train  # noqa: F401
from mlnnkit.cli import legacy as _legacy  # noqa: F401
from mlnnkit.cli import export as _export  # noqa: F401
from mlnnkit.cli import predict as _predict  # noqa: F401
from mlnnkit.cli import chain as _chain  # noqa: F401
from mlnnkit.cli import finetune as _finetune  # noqa: F401
from mlnnkit.cli import transfer as _transfer  # noqa: F401
from mlnnkit.cli import tune as _tune  # noqa: F401
# isort: on
from mlnnkit.cli._app import app, state
from mlnnkit.errors import Interrupted, MlnnkitError

__all__ = ["app", "main"]


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def _is_usage_error(e: BaseException) -> bool:
    # Click's ClickException interface (Typer may vendor its own copy of Click).
    return hasattr(e, "format_message") and hasattr(e, "exit_code") and hasattr(e, "show")


class _CommandInterrupted(Exception):
    """Carries a command's interrupt past Typer (which turns it into a bare exit 130)."""

    def __init__(self, interrupt: KeyboardInterrupt):
        super().__init__(str(interrupt))
        self.interrupt = interrupt


def _keep_interrupt(fn):
    @functools.wraps(fn)
    def command(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as e:
            raise _CommandInterrupted(e) from e

    return command


for _info in app.registered_commands:
    _info.callback = _keep_interrupt(_info.callback)


def _interrupted(e: BaseException | None) -> int:
    """One line for Ctrl-C: ``error: interrupted`` or the command's own message."""
    if state.debug and e is not None:
        traceback.print_exception(e)
    msg = _one_line(e) if isinstance(e, Interrupted) and str(e) else "interrupted"
    print(f"error: {msg}", file=sys.stderr, flush=True)
    return 130



class _NoteHandler(logging.Handler):
    """Prints the library's notes (the ``mlnnkit.notes`` logger) as ``note: ...`` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"note: {_one_line(record.getMessage())}", flush=True)


@contextlib.contextmanager
def _notes_as_lines():
    logger = logging.getLogger("mlnnkit.notes")
    handler = _NoteHandler()
    logger.addHandler(handler)
    old = logger.propagate
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = old


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 1 check failed, 2 user error, 130
    interrupted)."""
    with _notes_as_lines():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    state.debug = "--debug" in args
    from mlnnkit import _interrupt

    with _interrupt.watched() as ctrl_c:
        rv = _run(args)
    if ctrl_c and rv == 0:
        # A Ctrl-C that something swallowed (NumPy's array coercion can): the command
        # went on to its end, but what it computed after the interrupt is not trusted.
        print(
            "error: interrupted (Ctrl-C arrived while the command ran; it went on to its "
            "end: check its outputs, or run it again)",
            file=sys.stderr,
        )
        return 130
    return rv


def _run(args: list[str]) -> int:
    try:
        rv = app(args=args, prog_name="mlnnkit", standalone_mode=False)
    except MlnnkitError as e:
        if state.debug:
            traceback.print_exc()
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except PermissionError as e:  # an output mlnnkit's writers did not see coming
        if state.debug:
            traceback.print_exc()
        print(f"error: {e.filename or 'a file'}: permission denied", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        return _interrupted(e)
    except _CommandInterrupted as e:
        return _interrupted(e.interrupt)
    except Exception as e:
        name = type(e).__name__
        if name == "Exit" and hasattr(e, "exit_code"):
            # Typer turns Ctrl-C into Exit(130), the interrupt as its cause.
            cause = e.__cause__ or e.__context__
            if isinstance(cause, KeyboardInterrupt):
                return _interrupted(cause)
            return e.exit_code
        if name == "Abort":
            print("error: aborted", file=sys.stderr)
            return 130
        if _is_usage_error(e):  # bad option, missing argument, bad parameter value
            if state.debug:
                traceback.print_exc()
            print(f"error: {_one_line(e.format_message())}", file=sys.stderr)
            return 2
        raise
    if rv == 130:  # Typer's exit for Ctrl-C outside a command (while parsing, ...)
        return _interrupted(None)
    return rv if isinstance(rv, int) else 0
