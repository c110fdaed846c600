"""`mlnnkit inspect`, `import`, `verify`, `export`: legacy raw-weight networks in and out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlnnkit.cli._app import app

_FORMATS = "ocsmart|ffbp|rawh5"

# rawh5 reading options, shared by inspect, import and verify.
_PANEL = "rawh5 layout"
Weights = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="rawh5: dataset pattern of the weights, {i} = layer number "
        "(default 'Weights/Layer{i}').",
        rich_help_panel=_PANEL,
    ),
]
Biases = Annotated[
    str | None,
    typer.Option(
        "--biases",
        help="rawh5: dataset pattern of the biases (default 'Bias/Layer{i}'; '' for none).",
        rich_help_panel=_PANEL,
    ),
]
Activations = Annotated[
    str | None,
    typer.Option(
        "--activations",
        help="rawh5: one per layer, one for all, or hidden,output (e.g. tanh,linear).",
        rich_help_panel=_PANEL,
    ),
]
Transpose = Annotated[
    bool | None,
    typer.Option(
        "--transpose/--no-transpose",
        help="rawh5: weights stored (in, out) / (out, in) (default: "
        "found from how the shapes chain).",
        rich_help_panel=_PANEL,
    ),
]
NormIn = Annotated[
    str | None,
    typer.Option(
        "--norm-in",
        help="rawh5: dataset of [min, max] per input (default: none).",
        rich_help_panel=_PANEL,
    ),
]
NormOut = Annotated[
    str | None,
    typer.Option(
        "--norm-out",
        help="rawh5: dataset of [min, max] per output (default: none).",
        rich_help_panel=_PANEL,
    ),
]
ScaleRange = Annotated[
    str | None,
    typer.Option(
        "--scale-range",
        help="rawh5: the network's interval for scaled values, lo,hi (default -1,1).",
        rich_help_panel=_PANEL,
    ),
]
Samples = Annotated[
    int,
    typer.Option(
        "--samples",
        help="Inputs to compare on, spread over the file's input ranges, edges included.",
    ),
]
Tolerance = Annotated[
    float,
    typer.Option(
        "--tolerance", help="Largest error allowed, as a fraction of each output's range."
    ),
]
Format = Annotated[str, typer.Option("--format", help=f"auto|{_FORMATS}.")]
NetFile = Annotated[Path, typer.Argument(help="Network file: OC-SMART .h5, ffbp .net or raw HDF5.")]
ModelFile = Annotated[Path, typer.Argument(help="Keras model (.keras or .h5).")]


def _format(value: str | None) -> str | None:
    return None if value in (None, "", "auto") else value


def _read_options(weights, biases, activations, transpose, norm_in, norm_out, scale_range) -> dict:
    opts = {
        "weights": weights,
        "biases": biases,
        "activations": activations,
        "transpose": transpose,
        "norm_in": norm_in,
        "norm_out": norm_out,
        "scale_range": scale_range,
    }
    return {k: v for k, v in opts.items() if v is not None}


def _report(result, *, full_table: bool) -> None:
    typer.echo(f"verify: {result.describe()}")
    if full_table:
        typer.echo(result.table())
    elif not result.passed:
        rows = result.table().splitlines()
        failing = [rows[0]] + [r for r in rows[1:] if r.endswith("FAIL")]
        typer.echo("\n".join(failing[:21]))
    typer.echo(result.summary())
    note = result.snap_note()
    if note:
        typer.echo(note)


@app.command()
def inspect(
    file: Annotated[
        Path, typer.Argument(help="Network file: OC-SMART .h5, ffbp .net, raw HDF5, or .keras.")
    ],
    format: Annotated[str, typer.Option("--format", help=f"auto|{_FORMATS}|keras.")] = "auto",
    weights: Weights = None,
    biases: Biases = None,
    activations: Activations = None,
    transpose: Transpose = None,
    norm_in: NormIn = None,
    norm_out: NormOut = None,
    scale_range: ScaleRange = None,
) -> None:
    """Show a network file: format, planes, activations, parameters, inputs and outputs.

    Inputs and outputs are listed with their names and ranges when the file has them.
    """
    from mlnnkit import legacy

    opts = _read_options(weights, biases, activations, transpose, norm_in, norm_out, scale_range)
    spec = legacy.read(file, _format(format), **opts)
    typer.echo(f"file:        {file}")
    typer.echo(spec.describe())


@app.command("import")
def import_(
    file: NetFile,
    out: Annotated[Path, typer.Option("--out", "-o", help="Keras model to write (.keras or .h5).")],
    format: Format = "auto",
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype",
            help="float32|float64. Default: float32 when it passes verify, else float64 "
            "(said so); float64 with --sigmoid snap.",
        ),
    ] = None,
    sigmoid: Annotated[
        str,
        typer.Option(
            "--sigmoid",
            help="exact|snap: the exact sigmoid (what the network means) or SNAP's "
            "tabulated one (to reproduce SNAP's numbers exactly).",
        ),
    ] = "exact",
    samples: Samples = 10_000,
    tolerance: Tolerance = 1e-5,
    weights: Weights = None,
    biases: Biases = None,
    activations: Activations = None,
    transpose: Transpose = None,
    norm_in: NormIn = None,
    norm_out: NormOut = None,
    scale_range: ScaleRange = None,
) -> None:
    """Import a legacy network as a Keras model, verified against the file's own math.

    The model is input scaling -> Dense layers -> output scaling. It is compared with an
    independent float64 NumPy forward pass of the file (as `mlnnkit verify` does) and
    written only if it passes.
    """
    from mlnnkit import legacy
    from mlnnkit.errors import UserError, VerificationError
    from mlnnkit.legacy._keras import model_dtype
    from mlnnkit.train import save_model

    if not out.name.lower().endswith((".keras", ".h5")):
        raise UserError(
            f"--out {out}: write the Keras model as .keras (or .h5); to write a legacy "
            "format use `mlnnkit export`"
        )
    opts = _read_options(weights, biases, activations, transpose, norm_in, norm_out, scale_range)
    spec = legacy.read(file, _format(format), **opts)
    typer.echo(f"read {spec.source_format} network {file}: {spec.summary()}")
    model, result = legacy.import_spec(
        spec, dtype=dtype, sigmoid=sigmoid, samples=samples, tolerance=tolerance, name=file.stem
    )  # the library's choice of dtype and float64 fallback (its notes are printed)
    dtype = model_dtype(model)
    _report(result, full_table=False)
    if not result.passed:
        hint = (
            "; float32 arithmetic is not precise enough for this network: import with "
            "--dtype float64 (or accept the error with --tolerance)"
            if dtype == "float32"
            else ""
        )
        raise VerificationError(
            f"{file}: the imported model does not pass verify (max error "
            f"{result.max_rel_error:.3g} of range > tolerance {tolerance:g}); nothing written"
            + hint
        )
    save_model(model, out)
    typer.echo(f"wrote {out} ({dtype}, {model.count_params():,} parameters)")


@app.command()
def verify(
    model: ModelFile,
    file: Annotated[Path, typer.Argument(help="The legacy network file to compare with.")],
    samples: Samples = 10_000,
    tolerance: Tolerance = 1e-5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs.")] = 0,
    format: Format = "auto",
    weights: Weights = None,
    biases: Biases = None,
    activations: Activations = None,
    transpose: Transpose = None,
    norm_in: NormIn = None,
    norm_out: NormOut = None,
    scale_range: ScaleRange = None,
) -> None:
    """Check that a Keras model computes what a legacy network file computes.

    Both are evaluated on inputs spread over the file's input ranges (edges included),
    the file by an independent float64 NumPy forward pass; per output, the max absolute
    error and the max error relative to the output's range are printed. Exit status 1
    above --tolerance.
    """
    from mlnnkit import legacy
    from mlnnkit.errors import VerificationError
    from mlnnkit.models import load_model

    m = load_model(model, compile=False)
    opts = _read_options(weights, biases, activations, transpose, norm_in, norm_out, scale_range)
    result = legacy.verify(
        m, file, samples=samples, tolerance=tolerance, seed=seed, format=_format(format), **opts
    )
    _report(result, full_table=True)
    if not result.passed:
        raise VerificationError(
            f"{model} does not compute what {file} computes: max error "
            f"{result.max_rel_error:.3g} of range > tolerance {tolerance:g}"
        )


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="Keras model (.keras or .h5) of Dense layers.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Legacy network file to write.")],
    format: Annotated[
        str | None,
        typer.Option(
            "--format", help=f"{_FORMATS} (default: the format the model was imported from)."
        ),
    ] = None,
    samples: Samples = 10_000,
    tolerance: Tolerance = 1e-5,
    weights: Weights = None,
    biases: Biases = None,
    transpose: Transpose = None,
    norm_in: NormIn = None,
    norm_out: NormOut = None,
) -> None:
    """Write a model back to a legacy format (ocsmart, ffbp or rawh5), verified.

    The model may be imported, fine-tuned, or built from compatible Dense layers. The
    written file is read back and verified against the model; if anything fails, no file
    is left behind.
    """
    from mlnnkit import legacy
    from mlnnkit.errors import UserError
    from mlnnkit.models import load_model

    m = load_model(model, compile=False)
    fmt = _format(format) or legacy.source_format(m)
    if fmt is None:
        raise UserError(f"{model} was not imported from a legacy file: pass --format {_FORMATS}")
    opts = {
        "weights": weights,
        "biases": biases,
        "transpose": transpose,
        "norm_in": norm_in,
        "norm_out": norm_out,
    }
    result = legacy.save(m, out, fmt, samples=samples, tolerance=tolerance, **opts)
    spec = legacy.read(out, fmt)
    typer.echo(f"wrote {fmt} file {out}: {spec.summary()}")
    typer.echo(f"check: {result.describe()}")
    typer.echo(result.summary())
