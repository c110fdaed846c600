"""The `mlnnkit` command line: thin wrappers that parse, call the library, map errors.

Every command lives in its own module of this package and registers itself on the one
Typer app in :mod:`mlnnkit.cli._app`. Errors: a :class:`mlnnkit.errors.MlnnkitError` or a
usage error prints one line ``error: ...`` on stderr and exits 2 (``VerificationError``
exits 1); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import sys
import traceback

import click

from mlnnkit.cli._app import app, state
from mlnnkit.errors import MlnnkitError

# Command modules (each registers its commands on `app`).
from mlnnkit.cli import train as _train  # noqa: E402,F401
from mlnnkit.cli import predict as _predict  # noqa: E402,F401

__all__ = ["app", "main"]


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


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
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:  # usage errors: bad option, missing argument
        if state.debug:
            traceback.print_exc()
        print(f"error: {_one_line(e.format_message())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return rv if isinstance(rv, int) else 0
