"""`mlnnkit chain`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlnnkit.cli._app import app


@app.command("chain")
def chain_(
    steps: Annotated[
        list[Path],
        typer.Argument(
            metavar="STEP.keras...",
            help="Physical-unit models (from `mlnnkit import NET --physical`), in the order they run.",
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The chain model to write (.keras).")
    ],
    scope: Annotated[
        Path | None,
        typer.Option(
            "--scope",
            help="Autoassociative network (.keras) run first on the chain's inputs; its "
            "reconstruction error becomes the output scope_error and the out_of_scope flag. "
            "Import it with --dtype float64 for a scope_error exact to float64 (slower).",
        ),
    ] = None,
    scope_metric: Annotated[
        str,
        typer.Option(
            "--scope-metric",
            help="mean_rel: mean over the variables of |x'/x - 1| (OC-SMART); sum_abs: sum "
            "of |x' - x| (C2RCC).",
        ),
    ] = "mean_rel",
    scope_variables: Annotated[
        str | None,
        typer.Option(
            "--scope-variables",
            help="The scope's outputs compared, names or globs (comma list), e.g. "
            "'rtosa_779,rtosa_865,rtosa_885,rtosa_1020'. Default: all its outputs.",
        ),
    ] = None,
    scope_threshold: Annotated[
        float | None,
        typer.Option(
            "--scope-threshold",
            help="scope_error above it sets out_of_scope (default 0.07 for mean_rel, 0.01 "
            "for sum_abs).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="The chain's name (default: the output's stem).")
    ] = None,
) -> None:
    """Compose physical-unit models into ONE model, connected by variable names.

    A step's input is the output of an earlier step of that name, else an input of the
    chain; the chain's outputs are every step's outputs (and scope_error). `mlnnkit
    predict CHAIN.keras ... --flags` then runs every network and the flags in one
    compiled program."""
    from mlnnkit.errors import UserError
    from mlnnkit.retrieval import chain, describe_chain
    from mlnnkit.train import save_model

    if output.suffix.lower() != ".keras":
        raise UserError(f"--output {output}: a chain is written as a .keras file")
    if scope_metric not in ("mean_rel", "sum_abs"):
        raise UserError(f"--scope-metric {scope_metric!r}: use mean_rel or sum_abs")
    if scope is None and (scope_variables is not None or scope_threshold is not None):
        raise UserError("--scope-variables and --scope-threshold need --scope AANN.keras")
    if scope_threshold is not None and not scope_threshold >= 0:
        raise UserError(f"--scope-threshold must be >= 0, got {scope_threshold}")
    model = chain(
        steps, scope=scope, scope_metric=scope_metric, scope_variables=scope_variables,
        scope_threshold=scope_threshold, name=name or output.stem,
    )  # fmt: skip
    save_model(model, output)
    typer.echo(describe_chain(model))
    typer.echo(f"wrote {output} ({model.count_params():,} parameters)")
