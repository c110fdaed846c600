"""Hyperparameter tuning on Optuna: a search space in the run config (``[tune.space]``),
trials that are ordinary ``mlnnkit train`` runs with a pruning callback, studies kept in
an SQL database (SQLite by default, PostgreSQL for several machines) that survive a crash
and that several workers share.

Public surface:

- :class:`SearchSpace` - ``[tune.space]`` -> Optuna suggestions -> validated run configs;
- :class:`PruningCallback` - the Keras callback reporting a validation metric per epoch;
- :class:`TuneSettings`, :func:`tune`, :class:`StudyResult` - one ``mlnnkit tune`` call.

The search-space grammar (``parse_path``, ``Dimension``, ``TuneConfig``) lives in the
private ``_grammar`` module, which :mod:`mlnnkit.config` imports: this package therefore
imports its heavy parts (Optuna, Keras) on first use of a public name only.

Example:
    >>> from mlnnkit.config import load_config
    >>> from pathlib import Path
    >>> from mlnnkit.tune import TuneSettings, tune
    >>> cfg = load_config("tiny.toml")                   # [tune]: 2 trials over the units
    >>> res = tune(cfg, TuneSettings.resolve(cfg, out_dir="runs/tune"), log=lambda s: None)
    >>> (Path("runs/tune") / "best.toml").is_file(), res.best is not None
    (True, True)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlnnkit.tune._pruning import PruningCallback
    from mlnnkit.tune._space import SearchSpace
    from mlnnkit.tune._study import StudyResult, TuneSettings, infer_direction, tune

_LAZY = {
    "PruningCallback": "mlnnkit.tune._pruning",
    "SearchSpace": "mlnnkit.tune._space",
    "StudyResult": "mlnnkit.tune._study",
    "TuneSettings": "mlnnkit.tune._study",
    "infer_direction": "mlnnkit.tune._study",
    "tune": "mlnnkit.tune._study",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = ["PruningCallback", "SearchSpace", "StudyResult", "TuneSettings", "infer_direction", "tune"]
