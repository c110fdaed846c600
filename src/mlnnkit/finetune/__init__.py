"""Fine-tune a saved or imported network on new data, and show whether it helped.

``mlnnkit finetune MODEL --data FILE -o OUTDIR`` is :func:`run`. The steps:

1. load MODEL (``.keras``, a Keras ``.h5``, or a legacy network file: OC-SMART ``.h5``,
   ffbp ``.net``, imported through :mod:`mlnnkit.legacy`; :func:`mlnnkit.models.load_network`);
2. read the data (``.npz`` with arrays ``x`` and ``y``, or a ``.csv``/``.parquet``/``.npz``
   table with named ``--inputs``/``--targets`` columns), in the model's own physical units;
   warn when rows fall outside the network's input ranges (it would extrapolate there);
3. split the rows at random (seeded; :func:`mlnnkit.data.rows.split_rows`):
   ``test_fraction`` held out and never trained on, ``val_fraction`` of the rest for early
   stopping on the validation loss (restore-best);
4. freeze the first K Dense layers (``freeze``) or every layer up to a named one
   (``freeze_until``); the scaling layers of an imported network are never trained;
5. optionally add the L2-SP penalty ``alpha * ||w - w_original||^2`` on every fine-tuned
   weight (:class:`L2SP`, Li, Grandvalet & Davoine 2018), zero at the start;
6. fit through :func:`mlnnkit.train.fit` (the package's one fit path) with a standardized
   mean squared error (each output's error divided by the standard deviation of that output
   over the training rows, so outputs in different units weigh alike);
7. optionally train the same architecture from a fresh initialization on the same rows
   (``compare_scratch``);
8. write ``report.json`` (held-out metrics of original, fine-tuned, scratch), ``history.png``,
   ``scatter.png``, ``model.keras`` and, for a network from a legacy file, the fine-tuned
   network in that format again.

Modules: ``_losses`` (StandardizedMSE, L2-SP), ``_freeze`` (freezing, the scratch copy),
``_report`` (metrics, verdict), ``_run`` (:func:`finetune`, :func:`run`).

Example:
    >>> from mlnnkit import finetune
    >>> res = finetune.run("net.h5", "matchups.csv", "runs/ft",   # OC-SMART net, 7-5-1
    ...                    inputs="x*", targets="y", l2sp=1e-3, verbose=0)
    >>> res.report["finetuned"]["rmse"] < res.report["original"]["rmse"]
    True
"""

from __future__ import annotations

from mlnnkit.data.rows import split_rows
from mlnnkit.finetune._freeze import freeze_layers, is_fixed_layer, scratch_copy
from mlnnkit.finetune._losses import (
    L2SP,
    StandardizedMSE,
    attach_l2sp,
    detach_l2sp,
    l2sp_penalty,
    target_scale,
)
from mlnnkit.finetune._report import regression_metrics, verdict
from mlnnkit.finetune._run import (
    FinetuneResult,
    finetune,
    input_ranges,
    range_warning,
    read_data,
    run,
    source_format,
)
from mlnnkit.models import load_network

__all__ = [
    "L2SP",
    "FinetuneResult",
    "StandardizedMSE",
    "attach_l2sp",
    "detach_l2sp",
    "finetune",
    "freeze_layers",
    "input_ranges",
    "is_fixed_layer",
    "l2sp_penalty",
    "load_network",
    "range_warning",
    "read_data",
    "regression_metrics",
    "run",
    "scratch_copy",
    "source_format",
    "split_rows",
    "target_scale",
    "verdict",
]
