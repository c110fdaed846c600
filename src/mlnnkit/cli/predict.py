"""`mlnnkit predict`."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from mlnnkit.cli._app import app

_ADDRESS = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="Model: .keras or .h5 (e.g. from `mlnnkit import`).")],
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT... [ADDRESS]",
            help="Input files (.npy, .csv, .parquet, NetCDF .nc, HDF5 .h5) or globs "
            "('scenes/*.nc'); with --dask, a scheduler address (tcp://host:8786) among them.",
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o",
            help="Output file (its suffix picks the kind), or a directory for several inputs.",
        ),
    ],
    inputs: Annotated[
        str | None,
        typer.Option(
            "--inputs",
            help="Columns/variables that are the model's inputs, in its order (comma list or "
            "globs; a glob's matches in the file's own order: HDF5 creation order, else numbers "
            "in names compared as numbers). Default: the model's own input names, else all "
            "columns of the file. The order used is printed.",
        ),
    ] = None,
    outputs: Annotated[
        str | None,
        typer.Option(
            "--outputs",
            help="Names of the output columns/variables (comma list), or one name with {} "
            "for each default name ('{}_nn': rw_400_nn, ...; for a scene that has variables "
            "of the outputs' names already). Default: the model's own, else prediction "
            "(prediction_1, ... for several).",
        ),
    ] = None,
    chunk_rows: Annotated[
        int | None,
        typer.Option(
            "--chunk-rows", min=1, help="Rows per compiled call (default: from the model's size)."
        ),
    ] = None,
    block_rows: Annotated[
        int | None,
        typer.Option(
            "--block-rows", min=1,
            help="Rows read and written at a time, and per Dask task (default: ~32 MB of data).",
        ),
    ] = None,
    dask: Annotated[
        bool,
        typer.Option(
            "--dask",
            help="Run as Dask tasks: on local threads, or on the dask.distributed scheduler "
            "whose address (tcp://host:8786) follows --dask.",
        ),
    ] = False,
    flags: Annotated[
        bool,
        typer.Option(
            "--flags",
            help="Also write per-pixel quality flags (uint8, bits OR-ed over every network): "
            "1 input_out_of_range, 2 output_out_of_range, 4 output_at_limit, 8 out_of_scope, "
            "16 invalid_input; a quality_flags variable (scenes, with CF flag_masks/"
            "flag_meanings) or column (tables), OUT.flags.npy beside a .npy output.",
        ),
    ] = False,
    limit_margin: Annotated[
        float,
        typer.Option(
            "--limit-margin", min=0.0,
            help="With --flags: output_at_limit when a network output is within this of its "
            "min or max, in the network's own variables (C2RCC's 0.02).",
        ),
    ] = 0.02,
    shared_storage: Annotated[
        bool,
        typer.Option(
            "--shared-storage",
            help="With --dask on a cluster: every worker reads the model and the input files "
            "itself, at this machine's absolute paths (one machine, or a file system all "
            "workers mount at the same paths). Default: the model's bytes and the input rows "
            "travel to the workers.",
        ),
    ] = False,
    dask_timeout: Annotated[
        float,
        typer.Option(
            "--dask-timeout", metavar="SECONDS", min=0.1,
            help="With --dask: seconds to wait for the scheduler (and its first worker).",
        ),
    ] = 10.0,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal)."),
    ] = None,
) -> None:
    """Apply a model to every row (or pixel) of files of any size, chunk by chunk, with
    a compiled float32 forward pass. Rows with NaN in an input give NaN outputs.

    A scene (NetCDF/HDF5 variables of one shape, e.g. a 2030 x 1354 granule) is flattened
    to rows and the outputs are written back, in a copy of the file, as variables of the
    same shape. Every output is written under a temporary name and renamed when complete.
    With several inputs, a file that fails is reported and the others go on (exit 2 at the
    end)."""
    from mlnnkit import _interrupt
    from mlnnkit import predict as predict_io
    from mlnnkit.errors import UserError

    addresses = [f for f in files if _ADDRESS.match(f)]
    if addresses and not dask:
        raise UserError(f"{addresses[0]} is not a file; to run on that Dask scheduler add --dask")
    if len(addresses) > 1:
        raise UserError(f"one Dask scheduler address, please (got {', '.join(addresses)})")
    address = addresses[0] if addresses else None
    if shared_storage and address is None:
        raise UserError("--shared-storage is for --dask with a scheduler address (tcp://host:8786)")
    jobs = predict_io.plan_jobs([f for f in files if f not in addresses], output)
    for src, dst in jobs:  # fail early on a kind we cannot write
        predict_io.kind_of(dst)
    # with --dask the model file itself travels to the workers (loaded there and here)
    net = None if dask else predict_io.load_model_for_predict(model)
    show = sys.stderr.isatty() if progress is None else progress
    existing = {dst for _, dst in jobs if dst.exists()}  # said in the summary when replaced

    def report(r: predict_io.FileResult) -> None:
        bar.file_done()
        if r.error:
            if len(jobs) > 1:  # one file: its error is the command's (below)
                named = r.error.startswith(str(r.input))
                typer.echo(f"error: {'' if named else f'{r.input}: '}{r.error}", err=True)
            return
        rate = r.rows / r.seconds if r.seconds > 0 else 0.0
        speed = f"{rate / 1e6:.2f} M rows/s" if rate >= 1e6 else f"{rate:,.0f} rows/s"
        typer.echo(
            f"{r.output}: {r.rows:,} rows ({r.masked_rows:,} with NaN input -> NaN) "
            f"in {r.seconds:.2f} s ({speed})"
            + ("; replaced the existing file" if r.output in existing else "")
        )

    def opened(source) -> None:
        bar.add(source)
        typer.echo(f"{source.path}: inputs {_names_line(source.columns)} ({source.order})")

    with _Progress(show, len(jobs)) as bar:
        kwargs = {
            "inputs": inputs, "outputs": outputs, "chunk_rows": chunk_rows,
            "block_rows": block_rows, "progress": bar.advance, "on_open": opened,
            "on_done": report,
        }  # fmt: skip
        if flags:
            kwargs.update(flags=True, limit_margin=limit_margin)
        if not dask:
            # Ctrl-C only sets a flag that the block loop raises at its next check (within
            # 0.1 s): raised wherever the interpreter is, a KeyboardInterrupt can land in a
            # garbage-collector callback (JAX has one), which swallows it.
            with _interrupt.deferred():
                results = predict_io.predict_files(net, jobs, **kwargs)
        else:
            from mlnnkit.predict import predict_files_dask

            # the model travels to the workers as its file: its bytes, or its path
            with _dask_logs_quiet():
                results = predict_files_dask(
                    model, jobs, address=address, timeout=dask_timeout,
                    shared_storage=shared_storage if address is not None else None, **kwargs,
                )  # fmt: skip
    failed = [r for r in results if r.error]
    if flags:
        from mlnnkit.retrieval import format_flag_counts

        done = [r for r in results if not r.error and r.flag_counts is not None]
        if done:
            rows = sum(r.rows for r in done)
            totals = {k: sum(r.flag_counts[k] for r in done) for k in done[0].flag_counts}
            for line in format_flag_counts(totals, rows):
                typer.echo(f"flag {line}")
    if len(jobs) == 1 and failed:
        raise UserError(failed[0].error)
    if failed:
        raise UserError(
            f"{len(failed)} of {len(jobs)} files failed: {', '.join(str(r.input) for r in failed)}"
        )


@contextlib.contextmanager
def _dask_logs_quiet():
    """dask.distributed's own log lines off for the command, unless --debug: "Couldn't
    gather 1 keys, rescheduling" when a worker is lost (its tasks are rerun), the
    tracebacks it logs when the scheduler goes away (the command says it in one line)."""
    from mlnnkit.cli._app import state

    if state.debug:
        yield
        return
    import distributed  # noqa: F401 - sets up its log handlers, which are filtered here

    def drop(record) -> bool:
        return not record.name.startswith(("distributed", "tornado"))

    handlers = [h for name in ("distributed", "tornado", "")
                for h in logging.getLogger(name).handlers]  # fmt: skip
    for h in handlers:
        h.addFilter(drop)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(drop)


class _Progress:
    """A rich progress bar of rows over every opened file, with files done / total and
    rows/s (silent when not shown)."""

    def __init__(self, show: bool, n_files: int = 1):
        self.show = show
        self.bar = None
        self.task = None
        self.total = 0
        self.n_files = n_files
        self.files_done = 0

    def __enter__(self):
        if self.show:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )  # fmt: skip

            self.bar = Progress(
                TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                TextColumn("{task.fields[files]}"), _rate_column(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True,
            )  # fmt: skip
            self.bar.__enter__()
            self.task = self.bar.add_task("predict", total=0, files=self._files())
        return self

    def _files(self) -> str:
        return f"{self.files_done}/{self.n_files} files" if self.n_files > 1 else ""

    def file_done(self) -> None:
        self.files_done += 1
        if self.bar is not None:
            self.bar.update(self.task, files=self._files())

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


def _rate_column():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Rows per second, as the per-file lines show them."""

        def render(self, task):
            rate = task.finished_speed or task.speed
            if not rate:
                return Text("")
            return Text(f"{rate / 1e6:.2f} M rows/s" if rate >= 1e6 else f"{rate:,.0f} rows/s")

    return RateColumn()


def _names_line(names: list[str], head: int = 6, tail: int = 3) -> str:
    """The names in order; a long list as its first and last few and how many in all
    (PACE's 111 inputs filled a screen), enough to see the order is the model's."""
    if len(names) <= head + tail + 2:
        return ", ".join(names)
    return f"{', '.join(names[:head])}, ..., {', '.join(names[-tail:])} ({len(names)} in all)"

