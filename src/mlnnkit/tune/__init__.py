"""Hyperparameter tuning on Optuna: a search space in the run config (``[tune.space]``),
trials that are ordinary ``mlnnkit train`` runs with a pruning callback, studies kept in
an SQL database (SQLite by default, PostgreSQL for several machines) that survive a crash
and that several workers share.

Public surface:

- :class:`SearchSpace` - ``[tune.space]`` -> Optuna suggestions -> validated run configs;
- :class:`PruningCallback` - the Keras callback reporting a validation metric per epoch;
- :class:`TuneSettings`, :func:`tune`, :class:`StudyResult` - one ``mlnnkit tune`` call.

Example:
    >>> from mlnnkit.config import load_config                      # doctest: +SKIP
    >>> from mlnnkit.tune import TuneSettings, tune                  # doctest: +SKIP
    >>> cfg = load_config("examples/tune_fashion_mnist.toml")        # doctest: +SKIP
    >>> res = tune(cfg, TuneSettings.resolve(cfg, trials=20, out_dir="runs/fm"))  # doctest: +SKIP
"""

from __future__ import annotations

from mlnnkit.tune._pruning import PruningCallback
from mlnnkit.tune._space import SearchSpace
from mlnnkit.tune._study import StudyResult, TuneSettings, infer_direction, tune

__all__ = ["PruningCallback", "SearchSpace", "StudyResult", "TuneSettings", "infer_direction", "tune"]
