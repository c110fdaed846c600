"""`mlnnkit finetune`: adapt a saved or imported network to new data, and say if it helped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlnnkit.cli._app import app
from mlnnkit.cli._options import options_for_parameters


@app.command()
def finetune(
    model: Annotated[
        Path,
        typer.Argument(
            help="Network to fine-tune: .keras, Keras .h5, or a legacy OC-SMART .h5 / ffbp .net."
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="Rows in the model's physical units: .npz with arrays x and y, or a .csv/.parquet/"
            ".npz table with --inputs/--targets.",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder (report, plots, models).")
    ],
    inputs: Annotated[
        str | None,
        typer.Option(
            "--inputs", help="Input columns in the network's order: comma list or glob ('Rrs_*')."
        ),
    ] = None,
    targets: Annotated[
        str | None, typer.Option("--targets", help="Target columns, like --inputs.")
    ] = None,
    test_fraction: Annotated[
        float,
        typer.Option(
            "--test-fraction", help="Rows held out (never trained on) to measure the result."
        ),
    ] = 0.2,
    val_fraction: Annotated[
        float,
        typer.Option("--val-fraction", help="Share of the other rows used for early stopping."),
    ] = 0.2,
    freeze: Annotated[int, typer.Option("--freeze", help="Freeze the first K Dense layers.")] = 0,
    freeze_until: Annotated[
        str | None,
        typer.Option("--freeze-until", help="Freeze every layer up to and including this one."),
    ] = None,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate for fine-tuning.")] = 1e-4,
    epochs: Annotated[
        int, typer.Option("--epochs", help="Most epochs (early stopping may end sooner).")
    ] = 200,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    patience: Annotated[
        int,
        typer.Option("--patience", help="Epochs without a better validation loss before stopping."),
    ] = 20,
    l2sp: Annotated[
        float,
        typer.Option(
            "--l2sp",
            help="L2-SP strength ALPHA: penalty ALPHA*||w - w_original||^2 keeps weights near the "
            "original network's (0: off).",
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option(
            "--seed", min=0, max=2**32 - 1, help="Seed of the row split and of training."
        )] = 0,
    compare_scratch: Annotated[
        bool,
        typer.Option(
            "--compare-scratch",
            help="Also train the same architecture from a fresh initialization on the same rows.",
        ),
    ] = False,
    scratch_lr: Annotated[
        float, typer.Option("--scratch-lr", help="Learning rate of the scratch run.")
    ] = 1e-3,
    physical: Annotated[
        bool,
        typer.Option(
            "--physical",
            help="Physical units: a legacy MODEL is imported with its family's transforms "
            "(cos of degrees, log10/ln of reflectances, 10**/exp of the outputs) and --data "
            "holds physical values; the loss stays in the network's own space.",
        ),
    ] = False,
    drop_nonfinite: Annotated[
        bool, typer.Option("--drop-nonfinite", help="Drop rows with NaN/Inf instead of stopping.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print Keras's per-epoch lines.")
    ] = False,
) -> None:
    """Fine-tune MODEL on the rows of --data, measure original vs fine-tuned on held-out
    rows, and write OUTDIR: report.json, history.png, scatter.png, model.keras (and the
    network in its legacy format again when it came from one)."""
    from mlnnkit import finetune as ft
    from mlnnkit.errors import UserError

    try:
        res = ft.run(
            model,
            data,
            out,
            inputs=inputs,
            targets=targets,
            drop_nonfinite=drop_nonfinite,
            physical=physical,
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            freeze=freeze,
            freeze_until=freeze_until,
            lr=lr,
            epochs=epochs,
            batch_size=batch_size,
            patience=patience,
            l2sp=l2sp,
            seed=seed,
            compare_scratch=compare_scratch,
            scratch_lr=scratch_lr,
            verbose="auto" if verbose else 0,
        )
    except UserError as e:
        raise UserError(options_for_parameters(str(e))) from None
    _print_report(res, out)



def _print_report(res, out) -> None:
    r = res.report
    f = r["finetuning"]
    typer.echo(
        f"{r['n_train']} training, {r['n_val']} validation, {r['n_test']} held-out rows; "
        f"{f['epochs_run']} epochs (best {f['best_epoch']}) in {f['fit_seconds']:.1f} s"
    )
    ratio = "mdsa" in r["original"]
    head = f"{'held-out':10s} {'rmse':>11s} {'mae':>11s} {'bias':>11s} {'r2':>8s}"
    if ratio:  # ocean-colour metrics of the positive outputs
        head += f" {'MdSA %':>8s} {'bias x':>7s} {'error x':>7s} {'MAPE %':>8s}"
    typer.echo(head)
    for key in ("original", "finetuned", "scratch"):
        if key in r:
            m = r[key]
            line = f"{key:10s} {m['rmse']:11.5g} {m['mae']:11.5g} {m['bias']:11.4g} {m['r2']:8.4f}"
            if ratio:
                line += (
                    f" {m['mdsa']:8.3f} {m['mult_bias']:7.4f} {m['mult_error']:7.4f} "
                    f"{m['mape']:8.3f}"
                )
            typer.echo(line)
    if ratio:
        per = r["per_output"]
        shown = r["ocean_colour_metrics"]["outputs"]
        keys = [k for k in ("original", "finetuned", "scratch") if k in r]
        typer.echo("held-out MdSA % per output: " + "; ".join(
            f"{n} " + " -> ".join(f"{per[n][k]['mdsa']:.3g}" for k in keys) for n in shown[:8]
        ) + (f"; ... ({len(shown)} outputs)" if len(shown) > 8 else ""))  # fmt: skip
    typer.echo(r["verdict"])
    typer.echo(f"-> {out}/ ({', '.join(r['files'])})")
