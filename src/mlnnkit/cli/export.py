"""`mlnnkit export`: a model back to a legacy network file, or to ONNX, verified."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlnnkit.cli._app import app
from mlnnkit.cli.legacy import (
    _FORMATS,
    Biases,
    NormIn,
    NormOut,
    Samples,
    Transpose,
    Weights,
    _format,
    _report,
)


@app.command()
def export(
    model: Annotated[
        Path,
        typer.Argument(
            help="Keras model (.keras or .h5) of Dense layers; for ONNX any model, or a "
            "legacy network file."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Legacy network file or .onnx file to write.")
    ],
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help=f"{_FORMATS}|onnx (default: onnx for a .onnx file, else the format the "
            "model was imported from).",
        ),
    ] = None,
    samples: Samples = 10_000,
    tolerance: Annotated[
        float | None,
        typer.Option(
            "--tolerance",
            help="Largest error allowed, as a fraction of each output's range (default "
            "1e-5; 1e-12 for the ONNX file of a float64 model).",
        ),
    ] = None,
    weights: Weights = None,
    biases: Biases = None,
    transpose: Transpose = None,
    norm_in: NormIn = None,
    norm_out: NormOut = None,
    flags: Annotated[
        bool,
        typer.Option(
            "--flags",
            help="ONNX: add the quality_flags output (uint8 per row, as `mlnnkit predict "
            "--flags`).",
        ),
    ] = False,
) -> None:
    """Write a model back to a legacy format (ocsmart, ffbp or rawh5), verified.

    The model may be imported, fine-tuned, or built from compatible Dense layers. The
    written file is read back and verified against the model; if anything fails, no file
    is left behind.

    With `-o NET.onnx` (or `--format onnx`) the model is written as ONNX instead, checked
    with onnxruntime against the model and, for an imported network, against the float64
    reference of its legacy file (needs `pip install "mlnnkit[onnx]"`); see docs/onnx.md.
    """
    from mlnnkit import _atomic, legacy
    from mlnnkit.errors import UserError
    from mlnnkit.models import load_model

    _atomic.check_output_file(out, "--out")
    if (format or "").lower() == "onnx" or (format is None and out.suffix.lower() == ".onnx"):
        from mlnnkit.export._cli import export_onnx

        given = [o for o, v in (("--weights", weights), ("--biases", biases),
                 ("--transpose", transpose), ("--norm-in", norm_in), ("--norm-out", norm_out))
                 if v is not None]  # fmt: skip
        if given:
            raise UserError(f"{', '.join(given)} apply to --format rawh5 only, not to ONNX")
        return export_onnx(
            model, out, samples=samples, tolerance=tolerance, flags=flags, report=_report
        )
    if flags:
        raise UserError("--flags applies to ONNX export (-o NET.onnx) only")
    tolerance = 1e-5 if tolerance is None else tolerance
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
    spec = legacy.read(out, fmt, allow_large_weights=True)  # the model's own values
    typer.echo(f"wrote {fmt} file {out}: {spec.summary()}")
    typer.echo(f"check: {result.describe()}")
    typer.echo(result.summary())
