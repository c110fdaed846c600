"""The ONNX branch of ``mlnnkit export`` (called from :mod:`mlnnkit.cli.export`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from mlnnkit.export._onnx import OnnxVerificationError, require_onnx, to_onnx


def export_onnx(
    model: Path,
    out: Path,
    *,
    samples: int,
    tolerance: float | None,
    flags: bool = False,
    report: Callable[..., None],
) -> None:
    """Write ``model`` (a saved Keras model or a legacy network file) as ``out`` (.onnx),
    print the onnxruntime checks as ``mlnnkit verify`` prints them (``report``)."""
    require_onnx()  # exit 2 with the pip hint before loading anything
    try:
        result = to_onnx(model, out, samples=samples, tolerance=tolerance, flags=flags)
    except OnnxVerificationError as e:
        for check in e.checks:
            report(check, full_table=False)
        raise
    typer.echo(f"wrote onnx file {out}: {result.summary()}")
    for i, check in enumerate(result.checks):
        # The comparison with the file's own math is the one to read in full.
        report(check, full_table=(i == len(result.checks) - 1))
