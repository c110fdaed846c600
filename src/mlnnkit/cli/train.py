"""`mlnnkit train` and `mlnnkit evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlnnkit.cli._app import app


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Run config (TOML), e.g. examples/seed_mnist.toml.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default: runs/<config name>).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Override fit.epochs.")] = None,
    seed: Annotated[int | None, typer.Option(
            "--seed", min=0, max=2**32 - 1, help="Override the config's seed (0 to 2**32 - 1)."
        )] = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Start over: discard the backup of an interrupted run in --out instead of "
            "continuing it.",
        ),
    ] = False,
) -> None:
    """Train the network a run config describes, evaluate it on the test split, and write
    the run directory (model.keras, model.h5, history.csv, history.png, metrics.json).

    Started again with the same --out after an interruption (Ctrl-C, kill), the run
    continues from its last finished epoch, exactly as if it had not been stopped; with
    another config it is refused, naming what differs (--fresh starts over)."""
    from mlnnkit import train as train_mod
    from mlnnkit.config import load_config

    cfg = train_mod.apply_overrides(load_config(config), epochs=epochs, seed=seed)
    out = out or Path("runs") / (cfg.name or config.stem)
    result = train_mod.run(cfg, out, fresh=fresh)
    m = result.metrics
    test = ", ".join(f"{k} {v:.4f}" for k, v in m["test"].items())
    resumed = f", resumed after epoch {m['resumed_from_epoch']}" if m.get("resumed_from_epoch") else ""
    typer.echo(
        f"test: {test}\n{m['epochs']} epochs in {m['fit_seconds']:.1f} s{resumed} "
        f"({m['engine']} engine, {m['backend']} backend) -> {out}/"
    )


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="Saved model: .keras, .h5 or .weights.h5.")],
    config: Annotated[Path, typer.Option("--config", "-c", help="Run config whose test split to use.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Re-evaluate a saved model on the test split of a run config."""
    import json

    from mlnnkit import train as train_mod
    from mlnnkit.config import load_config
    from mlnnkit.data import load_data
    from mlnnkit.models import load_model

    cfg = load_config(config)
    ds = load_data(cfg)
    from mlnnkit.build import compile_model

    # The config's loss and metrics define what is reported, whatever the file was compiled with.
    m = load_model(model, cfg, input_shape=tuple(ds.x_train.shape[1:]), compile=False)
    compile_model(m, cfg.compile)
    res = train_mod.evaluate(m, ds.x_test, ds.y_test)
    if json_out:
        typer.echo(json.dumps({"test": res}))
    else:
        for k, v in res.items():
            typer.echo(f"{k}: {v:.6g}")
