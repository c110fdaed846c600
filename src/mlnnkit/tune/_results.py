"""A study's results in its output folder, each file written atomically:

- ``trials.csv``         number, state, value, duration, epochs and the sampled values,
- ``best.toml``          the run config with the best trial's values, runnable by
                         ``mlnnkit train``,
- ``best_model.keras``   the best model trained in this folder (+ ``best_model.json``),
- ``optimization_history.png`` and ``param_importances.png``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlnnkit import _atomic

if TYPE_CHECKING:
    import keras
    import optuna

    from mlnnkit.tune._space import SearchSpace


@contextlib.contextmanager
def folder_lock(out_dir: Path):
    """Serialise writers of one output folder (several workers on one machine)."""
    _atomic.make_dir(out_dir)
    with open(out_dir / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _better(value: float, than: float | None, direction: str) -> bool:
    if than is None or not math.isfinite(than):
        return True
    return value > than if direction == "max" else value < than


def keep_if_best(
    out_dir: Path, model: keras.Model, *, study: str, number: int, value: float,
    direction: str, metric: str, extra: dict[str, Any] | None = None,
) -> bool:
    """Save ``model`` as ``best_model.keras`` when ``value`` beats the best kept so far in
    ``out_dir`` for this study. Returns True when it was saved."""
    from mlnnkit.train import save_model

    if not math.isfinite(value):
        return False
    meta_path = out_dir / "best_model.json"
    with folder_lock(out_dir):
        old = None
        if meta_path.exists():
            with contextlib.suppress(ValueError, OSError):
                old = json.loads(meta_path.read_text())
        same = old is not None and old.get("study") == study and old.get("metric") == metric
        if same and not _better(value, old.get("value"), direction):
            return False
        save_model(model, out_dir / "best_model.keras")
        _atomic.write_json(
            meta_path,
            {"study": study, "trial": number, "metric": metric, "value": value, **(extra or {})},
        )
    return True


def trials_table(study: optuna.Study):
    """One row per trial: number, state, value, duration_s, epochs, then the params."""
    import pandas as pd

    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        dur = t.duration.total_seconds() if t.duration is not None else None
        row = {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "duration_s": round(dur, 3) if dur is not None else None,
            "epochs": t.user_attrs.get("epochs"),
        }
        row.update(t.params)
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["number", "state", "value", "duration_s", "epochs"])


def write_trials_csv(study: optuna.Study, path: Path) -> Path:
    df = trials_table(study)
    with _atomic.atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def write_best_toml(
    study: optuna.Study, space: SearchSpace, path: Path, *, metric: str, storage: str
) -> Path | None:
    """The base config with the best trial's values; None while no trial is complete."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    cfg = space.config(best.params)
    header = [
        f"# Best configuration of study {study.study_name!r} ({storage}):",
        f"# trial {best.number}, {metric} = {best.value:.6g}.",
        "# Sampled values: " + ", ".join(f"{k} = {v!r}" for k, v in best.params.items()),
        f"# Run it: mlnnkit train {path.name} --out RUNDIR",
        "",
    ]
    _atomic.write_text(path, "\n".join(header) + cfg.to_toml(relative_to=path.parent))
    return path


def write_plots(study: optuna.Study, out_dir: Path, *, metric: str) -> dict[str, str]:
    """optimization_history.png and param_importances.png; returns {file: why not written} for skipped ones."""
    from mlnnkit.report import plot_optimization_history, plot_param_importances

    skipped = {}
    try:
        plot_optimization_history(study, out_dir / "optimization_history.png", metric=metric)
    except ValueError as e:
        skipped["optimization_history.png"] = str(e)
    try:
        plot_param_importances(study, out_dir / "param_importances.png", metric=metric)
    except (ValueError, RuntimeError) as e:
        skipped["param_importances.png"] = str(e)
    return skipped
