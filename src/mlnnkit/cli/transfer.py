"""`mlnnkit transfer`: image transfer learning from a pretrained base, in two stages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlnnkit.cli._app import app


def _size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    from mlnnkit.errors import UserError

    parts = text.replace("x", ",").split(",")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"--image-size: give HEIGHT,WIDTH such as 160,160 (got {text!r})") from None
    return h, w


@app.command()
def transfer(
    base: Annotated[
        str,
        typer.Option(
            "--base",
            help="A keras.applications name (MobileNetV2, ...; ImageNet weights, downloaded) or a "
            "saved model (.keras/.h5) to cut at --cut-at.",
        ),
    ],
    data: Annotated[
        Path, typer.Option("--data", "-d", help="Folder with one subfolder of images per class.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (report, plots, model).")],
    test_data: Annotated[
        Path | None,
        typer.Option("--test-data", help="Separate test folder with the same class subfolders."),
    ] = None,
    cut_at: Annotated[
        str | None,
        typer.Option(
            "--cut-at",
            help="Layer of a saved base whose output feeds the new head "
            "(default: the input of its last layer).",
        ),
    ] = None,
    image_size: Annotated[
        str | None, typer.Option("--image-size", help="HEIGHT,WIDTH (default: the base's).")
    ] = None,
    weights: Annotated[
        str,
        typer.Option("--weights", help="keras.applications weights: imagenet or none (random)."),
    ] = "imagenet",
    scale: Annotated[
        float,
        typer.Option(
            "--scale", help="Saved base: pixels are divided by this (255 as mlnnkit train does)."
        ),
    ] = 255.0,
    test_fraction: Annotated[
        float, typer.Option("--test-fraction", help="Images held out (no --test-data).")
    ] = 0.2,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Share of the rest for early stopping.")
    ] = 0.2,
    epochs: Annotated[
        int, typer.Option("--epochs", help="Stage 1 (new head on the frozen base): most epochs.")
    ] = 20,
    fine_tune_epochs: Annotated[
        int,
        typer.Option(
            "--fine-tune-epochs", help="Stage 2 (top layers unfrozen): most epochs; 0 skips it."
        ),
    ] = 20,
    unfreeze: Annotated[
        int | None,
        typer.Option(
            "--unfreeze", help="Stage 2 trains the top N layers of the base (default: all)."
        ),
    ] = None,
    lr: Annotated[float, typer.Option("--lr", help="Stage 1 learning rate (Adam).")] = 1e-3,
    fine_tune_lr: Annotated[
        float, typer.Option("--fine-tune-lr", help="Stage 2 learning rate.")
    ] = 1e-5,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    patience: Annotated[
        int, typer.Option("--patience", help="Early stopping on validation loss.")
    ] = 5,
    dropout: Annotated[
        float, typer.Option("--dropout", help="Dropout before the new head's Dense layer.")
    ] = 0.2,
    augment: Annotated[
        bool, typer.Option("--augment", help="Random flips and rotations while training.")
    ] = False,
    compare_scratch: Annotated[
        bool,
        typer.Option(
            "--compare-scratch", help="Also train the same network from scratch on the same images."
        ),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1)] = 0,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print Keras's per-epoch lines.")
    ] = False,
) -> None:
    """Transfer a pretrained network to the image classes of --data: stage 1 trains a new
    head on the frozen base, stage 2 unfreezes its top layers at a lower learning rate;
    writes OUTDIR: report.json, history.png, confusion.png, model.keras."""
    from mlnnkit import transfer as tl

    res = tl.run(
        base,
        data,
        out,
        test_data=test_data,
        cut_at=cut_at,
        image_size=_size(image_size),
        weights=weights,
        scale=scale,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        epochs=epochs,
        fine_tune_epochs=fine_tune_epochs,
        unfreeze=unfreeze,
        lr=lr,
        fine_tune_lr=fine_tune_lr,
        batch_size=batch_size,
        patience=patience,
        dropout=dropout,
        augment=augment,
        compare_scratch=compare_scratch,
        seed=seed,
        verbose="auto" if verbose else 0,
    )
    r = res.report
    typer.echo(
        f"{len(r['classes'])} classes; {r['n_train']} training, {r['n_val']} validation, "
        f"{r['n_test']} test images; base {r['base']}"
        + (f" cut at {r['cut_at']!r}" if r.get("cut_at") else "")
    )
    typer.echo(r["verdict"])
    typer.echo(f"-> {out}/ ({', '.join(r['files'])})")
