"""`mlnnkit predict`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mlnnkit.cli._app import app


@app.command()
def predict(
    model: Path = typer.Argument(..., help="Model: .keras or .h5 (e.g. from `mlnnkit import`)."),
    inputs_files: list[str] = typer.Argument(
        ...,
        metavar="INPUT...",
        help="Input files (.npy, .csv, .parquet, NetCDF .nc, HDF5 .h5) or globs ('scenes/*.nc').",
    ),
    output: str = typer.Option(
        ..., "--output", "-o",
        help="Output file (its suffix picks the kind), or a directory for several inputs.",
    ),  # fmt: skip
    inputs: str = typer.Option(
        None, "--inputs",
        help="Columns/variables that are the model's inputs, in its order (comma list or "
        "globs). Default: the model's own input names, else all columns of the file.",
    ),  # fmt: skip
    outputs: str = typer.Option(
        None, "--outputs",
        help="Names of the output columns/variables. Default: the model's own, else prediction.",
    ),  # fmt: skip
    chunk_rows: int = typer.Option(
        None, "--chunk-rows", min=1,
        help="Rows per compiled call (default: chosen from the model's size).",
    ),  # fmt: skip
    block_rows: int = typer.Option(
        None, "--block-rows", min=1,
        help="Rows read and written at a time, and per Dask task (default: ~32 MB of data).",
    ),  # fmt: skip
    dask: str = typer.Option(
        None, "--dask", is_flag=False, flag_value="local", metavar="[ADDRESS]",
        help="Run as Dask tasks: on local threads (--dask), or on the dask.distributed "
        "scheduler at ADDRESS (--dask tcp://host:8786). Put it after the inputs.",
    ),  # fmt: skip
    progress: bool = typer.Option(
        None, "--progress/--no-progress", help="Progress bar (default: on a terminal)."
    ),
) -> None:
    """Apply a model to every row (or pixel) of files of any size, chunk by chunk, with
    a compiled float32 forward pass. Rows with NaN in an input give NaN outputs.

    A scene (NetCDF/HDF5 variables of one shape, e.g. a 2030 x 1354 granule) is flattened
    to rows and the outputs are written back, in a copy of the file, as variables of the
    same shape. Every output is written under a temporary name and renamed when complete."""
    from mlnnkit import predict_io
    from mlnnkit.errors import UserError
    from mlnnkit.models import load_model

    jobs = predict_io.plan_jobs(inputs_files, output)
    for src, dst in jobs:  # fail early on a kind we cannot write
        predict_io.kind_of(dst)
    net = load_model(model, compile=False)
    show = sys.stderr.isatty() if progress is None else progress

    def report(r: predict_io.FileResult) -> None:
        if r.error:
            if len(jobs) > 1:
                typer.echo(f"error: {r.input}: {r.error}", err=True)
            return
        rate = r.rows / r.seconds / 1e6 if r.seconds > 0 else float("nan")
        typer.echo(
            f"{r.output}: {r.rows:,} rows ({r.masked_rows:,} with NaN input -> NaN) "
            f"in {r.seconds:.2f} s ({rate:.2f} M rows/s)"
        )

    with _Progress(show) as bar:
        kwargs = dict(
            inputs=inputs, outputs=outputs, chunk_rows=chunk_rows, block_rows=block_rows,
            progress=bar.advance, on_open=bar.add, on_done=report,
        )  # fmt: skip
        if dask is None:
            results = predict_io.predict_files(net, jobs, **kwargs)
        else:
            from mlnnkit.predict_dask import predict_files_dask

            address = None if dask in ("", "local") else dask
            results = predict_files_dask(net, jobs, address=address, **kwargs)
    failed = [r for r in results if r.error]
    if len(jobs) == 1 and failed:
        raise UserError(failed[0].error)
    if failed:
        raise UserError(
            f"{len(failed)} of {len(jobs)} files failed: {', '.join(str(r.input) for r in failed)}"
        )


class _Progress:
    """A rich progress bar of rows over every opened file (silent when not shown)."""

    def __init__(self, show: bool):
        self.show = show
        self.bar = None
        self.task = None
        self.total = 0

    def __enter__(self):
        if self.show:
            from rich.console import Console
            from rich.progress import (
                BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn,
            )  # fmt: skip

            self.bar = Progress(
                TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                TimeRemainingColumn(), console=Console(stderr=True), transient=True,
            )  # fmt: skip
            self.bar.__enter__()
            self.task = self.bar.add_task("predict", total=0)
        return self

    def add(self, source) -> None:
        self.total += source.n_rows
        if self.bar is not None:
            self.bar.update(self.task, total=self.total)

    def advance(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, rows)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
