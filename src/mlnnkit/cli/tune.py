"""`mlnnkit tune`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlnnkit.cli._app import app


@app.command()
def tune(
    config: Annotated[Path, typer.Argument(help="Run config (TOML) with a [tune.space] section.")],
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials", "-n",
            help="The study ends with this many COMPLETE trials, counting those it already "
            "has (default: tune.trials, 20).",
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Start no new trial after S seconds.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: runs/<study>_tune).")
    ] = None,
    study: Annotated[
        str | None, typer.Option("--study", help="Study name (default: the config's name).")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="SQLAlchemy URL of the study database (default: sqlite:///OUT/study.db), e.g. "
            "postgresql://user:password@host/db for workers on several machines.",
        ),
    ] = None,
    sampler: Annotated[
        str | None, typer.Option("--sampler", help="tpe (default) or random.")
    ] = None,
    pruner: Annotated[
        str | None, typer.Option("--pruner", help="median (default), hyperband or none.")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric", help="Validation metric to optimise, e.g. val_accuracy (default val_loss)."
        ),
    ] = None,
    direction: Annotated[
        str | None, typer.Option("--direction", help="min or max (default: from the metric's name).")
    ] = None,
) -> None:
    """Search the config's [tune.space] with Optuna; every trial is an `mlnnkit train` run.

    Writes OUT/trials.csv, OUT/best.toml (runnable with `mlnnkit train`),
    OUT/best_model.keras and plots. Run the same command again to continue the study, or
    start it several times (same --storage and --study) to share the work."""
    from mlnnkit.config import load_config
    from mlnnkit.tune import TuneSettings
    from mlnnkit.tune import tune as run_tune

    cfg = load_config(config)
    settings = TuneSettings.resolve(
        cfg, config_path=config, out_dir=out, trials=trials, timeout=timeout, study=study,
        storage=storage, sampler=sampler, pruner=pruner, metric=metric, direction=direction,
    )
    res = run_tune(cfg, settings, where=str(config), log=typer.echo)
    s = res.settings
    c = res.counts
    typer.echo(
        f"study {s.study_name!r}: {c['COMPLETE']} complete, {c['PRUNED']} pruned, "
        f"{c['FAIL']} failed" + (f", {c['RUNNING']} running" if c["RUNNING"] else "")
        + f" ({len(res.ran)} run by this worker"
        + ("; stopped by --timeout" if res.stopped_by == "timeout" else "") + ")"
    )
    if res.best is not None:
        params = ", ".join(f"{k} = {v!r}" for k, v in res.best.params.items())
        typer.echo(f"best: trial {res.best.number}, {s.metric} {res.best.value:.4f}: {params}")
    if res.importances:
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(res.importances.items())[:4])
        typer.echo(f"importance: {top}")
    for name, why in res.skipped_plots.items():
        typer.echo(f"note: {name} not written: {why}")
    typer.echo(f"-> {s.out_dir}/ (trials.csv, best.toml, best_model.keras, plots)")
