# Over 400 lines: the rawh5 and physical-units option types at its top serve all its commands.
"""`mlnnkit inspect`, `import`, `verify`: legacy raw-weight networks in (out: cli/export.py)."""

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
        help="Inputs to compare on, spread over the file's input ranges ([-1, 1] when it "
        "has none), edges included.",
    ),
]
Tolerance = Annotated[
    float,
    typer.Option(
        "--tolerance", help="Largest error allowed, as a fraction of each output's range."
    ),
]
AllowLarge = Annotated[
    bool,
    typer.Option(
        "--allow-large-weights",
        help="Accept weights or biases beyond 1e4 and range limits beyond 1e12 in magnitude "
        "(refused by default: no trained network holds them, a damaged file does).",
    ),
]
Format = Annotated[str, typer.Option("--format", help=f"auto|{_FORMATS}.")]

# Physical units (#11): the transforms a processor applies around the network.
_PHYS = "physical units"
Physical = Annotated[
    bool,
    typer.Option(
        "--physical",
        help="Take and give physical values (degrees, reflectances, concentrations): "
        "transforms from the network's family (OC-SMART file name, C2RCC log_X names) "
        "or --transforms.",
        rich_help_panel=_PHYS,
    ),
]
Transforms = Annotated[
    str | None,
    typer.Option(
        "--transforms",
        help="Input transforms per variable, 1-based: e.g. cos_deg:1-3,log10:4-110 "
        "(identity|log10|ln|cos_deg); override the family's for the listed variables, "
        "others keep it (identity without a family). Implies --physical.",
        rich_help_panel=_PHYS,
    ),
]
OutputTransforms = Annotated[
    str | None,
    typer.Option(
        "--output-transforms",
        help="Output transforms per variable: e.g. pow10 (all) or exp:1-5 "
        "(identity|pow10|exp). Implies --physical.",
        rich_help_panel=_PHYS,
    ),
]
Names = Annotated[
    str | None,
    typer.Option(
        "--names",
        help="Physical input names, a comma list (one per input). Implies --physical.",
        rich_help_panel=_PHYS,
    ),
]
OutputNames = Annotated[
    str | None,
    typer.Option(
        "--output-names",
        help="Physical output names, a comma list. Implies --physical.",
        rich_help_panel=_PHYS,
    ),
]


def _recipe(spec, file, physical, transforms, output_transforms, names, output_names):
    from mlnnkit import legacy
    from mlnnkit.retrieval._recipes import OPTIONS

    return legacy.physical_recipe(
        spec,
        file,
        physical=physical,
        transforms=transforms,
        output_transforms=output_transforms,
        names=names,
        output_names=output_names,
        options=OPTIONS,
    )
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


def _short(names: list[str], k: int = 4) -> str:
    """``solz, senz, relaz, Lrc_1, ... rh (111)``."""
    if len(names) <= k + 1:
        return ", ".join(names)
    return f"{', '.join(names[:k])}, ... {names[-1]} ({len(names)})"


def _report(result, *, full_table: bool) -> None:
    typer.echo(f"verify: {result.describe()}")
    if full_table:
        typer.echo(result.table())
    elif not result.passed:
        rows = result.table().splitlines()
        failing = [rows[0]] + [r for r in rows[1:] if r.endswith("FAIL")]
        typer.echo("\n".join(failing[:21]))
    typer.echo(result.summary())
    for note in (result.physical_note(), result.snap_note()):
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
    allow_large_weights: AllowLarge = False,
    transforms: Transforms = None,
    output_transforms: OutputTransforms = None,
    names: Names = None,
    output_names: OutputNames = None,
) -> None:
    """Show a network file: format, planes, activations, parameters, inputs and outputs.

    Inputs and outputs are listed with their names and ranges when the file has them.
    When the network's family is recognised (or --transforms are given), the physical
    variables follow, with their ranges in physical units next to the network's own. A
    Keras model (.keras, or a Keras .h5) of any architecture is described by its input
    and output shapes, parameters and layers (and, if mlnnkit imported it from a legacy
    file, that file's view first; if it sits in a run directory, the run's test metrics).
    """
    from mlnnkit import legacy
    from mlnnkit.errors import UserError
    from mlnnkit.retrieval import _recipes

    if file.suffix.lower() == ".keras" and file.is_file() and _inspect_chain(file):
        return
    opts = _read_options(weights, biases, activations, transpose, norm_in, norm_out, scale_range)
    fmt = _format(format)
    keras_model = None
    if fmt == "keras" or (fmt is None and legacy.detect_format(file) == "keras"):
        from mlnnkit.describe import describe_model, describe_run_dir
        from mlnnkit.models import load_model

        if opts:
            raise UserError(
                f"options {', '.join(sorted(opts))} apply to --format rawh5 only; {file} is "
                "a Keras model"
            )
        keras_model = load_model(file, compile=False)
        legacy_view = legacy.source_format(keras_model) is not None
        if legacy_view:
            try:
                legacy.from_keras(keras_model)
            except UserError:  # changed since its import (e.g. layers added): Keras view only
                legacy_view = False
        if not legacy_view:
            typer.echo(f"file:        {file}")
            typer.echo(describe_model(keras_model))
            run = describe_run_dir(file)
            if run:
                typer.echo(run)
            return
    spec = legacy.read(file, fmt, allow_large_weights=allow_large_weights, **opts)
    typer.echo(f"file:        {file}")
    typer.echo(spec.describe())
    if spec.source_format != "keras":
        given = (transforms, output_transforms, names, output_names)
        try:
            recipe = _recipe(spec, file, True, *given)
        except UserError:
            if any(v is not None for v in given):
                raise
            typer.echo(
                "physical:    no known family (import --physical needs --transforms); "
                f"known: {_recipes.known_families()}"
            )
        else:
            typer.echo(_recipes.describe(recipe, spec))
    if keras_model is not None:  # an imported network saved as Keras: its layers too
        typer.echo(describe_model(keras_model, summary=False, metadata=False))
        run = describe_run_dir(file)
        if run:
            typer.echo(run)


def _inspect_chain(file: Path) -> bool:
    """Print a chain's steps (`mlnnkit chain`); False when the model is not a chain."""
    from mlnnkit.models import load_model
    from mlnnkit.retrieval import describe_chain, is_chain

    model = load_model(file, compile=False)
    if not is_chain(model):
        return False
    typer.echo(f"file:        {file}")
    typer.echo(describe_chain(model))
    return True


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
    allow_large_weights: AllowLarge = False,
    physical: Physical = False,
    transforms: Transforms = None,
    output_transforms: OutputTransforms = None,
    names: Names = None,
    output_names: OutputNames = None,
) -> None:
    """Import a legacy network as a Keras model, verified against the file's own math.

    The model is input scaling -> Dense layers -> output scaling. It is compared with an
    independent float64 NumPy forward pass of the file (as `mlnnkit verify` does) and
    written only if it passes. With --physical it is input transforms -> scaling -> Dense
    -> scaling -> output transforms: physical values in and out, named, verified whole.
    """
    from mlnnkit import _atomic, legacy
    from mlnnkit.errors import UserError, VerificationError
    from mlnnkit.legacy._keras import model_dtype
    from mlnnkit.train import save_model

    _atomic.check_output_file(out, "--out")
    if not out.name.lower().endswith((".keras", ".h5")):
        raise UserError(
            f"--out {out}: write the Keras model as .keras (or .h5); to write a legacy "
            "format use `mlnnkit export`"
        )
    opts = _read_options(weights, biases, activations, transpose, norm_in, norm_out, scale_range)
    spec = legacy.read(file, _format(format), allow_large_weights=allow_large_weights, **opts)
    typer.echo(f"read {spec.source_format} network {file}: {spec.summary()}")
    if sigmoid == "snap" and "sigmoid" not in spec.activations:
        raise UserError(
            f"--sigmoid snap: {file} has no sigmoid layer (activations "
            f"{', '.join(spec.activations)}); SNAP's table replaces sigmoid only: leave "
            "--sigmoid out"
        )
    recipe = _recipe(spec, file, physical, transforms, output_transforms, names, output_names)
    if recipe is not None:
        ins, outs = recipe.input_names, recipe.output_names
        typer.echo(
            f"physical: {recipe.describe()}: inputs {_short(ins)}, outputs {_short(outs)}"
        )
    model, result = legacy.import_spec(
        spec, dtype=dtype, sigmoid=sigmoid, samples=samples, tolerance=tolerance,
        name=file.stem, recipe=recipe,
    )  # the library's choice of dtype and float64 fallback (its notes are printed)  # fmt: skip
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
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1, help="Seed of the random inputs.")] = 0,
    format: Format = "auto",
    weights: Weights = None,
    biases: Biases = None,
    activations: Activations = None,
    transpose: Transpose = None,
    norm_in: NormIn = None,
    norm_out: NormOut = None,
    scale_range: ScaleRange = None,
    allow_large_weights: AllowLarge = False,
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
        m, file, samples=samples, tolerance=tolerance, seed=seed, format=_format(format),
        allow_large_weights=allow_large_weights, **opts,
    )
    _report(result, full_table=True)
    if not result.passed:
        raise VerificationError(
            f"{model} does not compute what {file} computes: max error "
            f"{result.max_rel_error:.3g} of range > tolerance {tolerance:g}"
        )
