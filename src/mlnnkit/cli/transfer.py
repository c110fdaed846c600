"""`mlnnkit transfer`: image transfer learning from a pretrained base, in two stages."""

from __future__ import annotations

from pathlib import Path

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
    base: str = typer.Option(
        ..., "--base",
        help="A keras.applications name (MobileNetV2, ...; ImageNet weights, downloaded) or a "
        "saved model (.keras/.h5) to cut at --cut-at.",
    ),
    data: Path = typer.Option(..., "--data", "-d", help="Folder with one subfolder of images per class."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (report, plots, model)."),
    test_data: Path = typer.Option(
        None, "--test-data", help="Separate test folder with the same class subfolders."
    ),
    cut_at: str = typer.Option(
        None, "--cut-at", help="Layer of a saved base whose output feeds the new head "
        "(default: the input of its last layer)."
    ),
    image_size: str = typer.Option(None, "--image-size", help="HEIGHT,WIDTH (default: the base's)."),
    weights: str = typer.Option(
        "imagenet", "--weights", help="keras.applications weights: imagenet or none (random)."
    ),
    scale: float = typer.Option(
        255.0, "--scale", help="Saved base: pixels are divided by this (255 as mlnnkit train does)."
    ),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Images held out (no --test-data)."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of the rest for early stopping."),
    epochs: int = typer.Option(20, "--epochs", help="Stage 1 (new head on the frozen base): most epochs."),
    fine_tune_epochs: int = typer.Option(
        20, "--fine-tune-epochs", help="Stage 2 (top layers unfrozen): most epochs; 0 skips it."
    ),
    unfreeze: int = typer.Option(
        None, "--unfreeze", help="Stage 2 trains the top N layers of the base (default: all)."
    ),
    lr: float = typer.Option(1e-3, "--lr", help="Stage 1 learning rate (Adam)."),
    fine_tune_lr: float = typer.Option(1e-5, "--fine-tune-lr", help="Stage 2 learning rate."),
    batch_size: int = typer.Option(32, "--batch-size"),
    patience: int = typer.Option(5, "--patience", help="Early stopping on validation loss."),
    dropout: float = typer.Option(0.2, "--dropout", help="Dropout before the new head's Dense layer."),
    augment: bool = typer.Option(False, "--augment", help="Random flips and rotations while training."),
    compare_scratch: bool = typer.Option(
        False, "--compare-scratch", help="Also train the same network from scratch on the same images."
    ),
    seed: int = typer.Option(0, "--seed"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print Keras's per-epoch lines."),
) -> None:
    """Transfer a pretrained network to the image classes of --data: stage 1 trains a new
    head on the frozen base, stage 2 unfreezes its top layers at a lower learning rate;
    writes OUTDIR: report.json, history.png, confusion.png, model.keras."""
    from mlnnkit import transfer as tl

    res = tl.run(
        base, data, out, test_data=test_data, cut_at=cut_at, image_size=_size(image_size),
        weights=weights, scale=scale, test_fraction=test_fraction, val_fraction=val_fraction,
        epochs=epochs, fine_tune_epochs=fine_tune_epochs, unfreeze=unfreeze, lr=lr,
        fine_tune_lr=fine_tune_lr, batch_size=batch_size, patience=patience, dropout=dropout,
        augment=augment, compare_scratch=compare_scratch, seed=seed,
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
