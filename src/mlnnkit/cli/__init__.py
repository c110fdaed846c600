"""The `mlnnkit` command line: thin wrappers that parse, call the library, map errors.

Every command lives in its own module of this package and registers itself on the one
Typer app in :mod:`mlnnkit.cli._app`. Errors: a :class:`mlnnkit.errors.MlnnkitError` or a
usage error prints one line ``error: ...`` on stderr and exits 2 (``VerificationError``
exits 1); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import sys
import traceback

# Command modules (each registers its commands on `app`).
# Command modules register their commands on `app`; the order here is the order of
# `mlnnkit --help`: the training workflow first, then legacy networks, inference,
# adaptation and tuning.
# isort: off
from mlnnkit.cli import train as _train  # noqa: F401
from mlnnkit.cli import legacy as _legacy  # noqa: F401
from mlnnkit.cli import predict as _predict  # noqa: F401
from mlnnkit.cli import chain as _chain  # noqa: F401
from mlnnkit.cli import finetune as _finetune  # noqa: F401
from mlnnkit.cli import transfer as _transfer  # noqa: F401
from mlnnkit.cli import tune as _tune  # noqa: F401
# isort: on
from mlnnkit.cli._app import app, state
from mlnnkit.errors import MlnnkitError

__all__ = ["app", "main"]


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def _is_usage_error(e: BaseException) -> bool:
    # Click's ClickException interface (Typer may vendor its own copy of Click).
    return hasattr(e, "format_message") and hasattr(e, "exit_code") and hasattr(e, "show")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 1 check failed, 2 user error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    state.debug = "--debug" in args
    try:
        rv = app(args=args, prog_name="mlnnkit", standalone_mode=False)
    except MlnnkitError as e:
        if state.debug:
            traceback.print_exc()
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        name = type(e).__name__
        if name == "Exit" and hasattr(e, "exit_code"):
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
    return rv if isinstance(rv, int) else 0
