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


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of an error instead of one line."
    ),
) -> None:
    state.debug = debug
