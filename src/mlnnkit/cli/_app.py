"""The Typer application every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="mlnnkit",
    help=(
        "Build, train, tune, port and fine-tune small neural networks on Keras 3.\n\n"
        "Run `mlnnkit COMMAND --help` for the options of one command."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help text: no Rich markup, so `[tune.space]` or `[min, max]` print as written.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class State:
    debug: bool = False


state = State()


def _print_version(value: bool) -> None:
    if value:
        from mlnnkit import __version__

        typer.echo(f"mlnnkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of an error instead of one line."
    ),
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print mlnnkit's version and exit.",
    ),
) -> None:
    state.debug = debug
