"""Docstring examples run as tests (``python -m pytest`` collects ``src/mlnnkit`` with
``--doctest-modules``).

Every example runs in a fresh temporary folder that holds what the examples name:

- the real networks of ``../shared/fixtures`` (``PACE_Lrc_aaNN.H5``,
  ``olci_rw_iop_37x37x37_596495.4.net``, ...) as links, when that folder is present;
- ``net.h5``: a small OC-SMART-layout network (7-5-1), ``net.keras`` its import;
- ``pace.keras``: the PACE network imported in physical units (with the fixtures);
- ``rows.npy``: 100 rows of 7 inputs for ``net.keras``;
- ``tiny.toml`` with ``table.csv``: a run config of a 3-8-1 regression, 2 epochs (its
  ``[tune]`` section searches the hidden layer's units over 2 trials);
- ``matchups.csv``: 300 rows of ``x1`` ... ``x7`` and ``y`` for fine-tuning ``net.h5``.

``np``, ``keras`` and ``mlnnkit`` are imported for every example. An example that names a
fixture file is skipped, saying why, where ../shared/fixtures is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MLNNKIT_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"


def _fixture_files() -> dict[str, Path]:
    if not FIXTURES.is_dir():
        return {}
    return {p.name: p for p in FIXTURES.rglob("*") if p.suffix.lower() in (".h5", ".net")}


def _write_small_network(path: Path) -> None:
    import h5py

    rng = np.random.default_rng(0)
    sizes = [7, 5, 1]
    with h5py.File(path, "w") as f:
        f["Layers"] = np.array(sizes, np.int16)
        f["Norm_in"] = np.column_stack([np.zeros(7), np.arange(1.0, 8.0)])
        f["Norm_out"] = np.array([[0.0, 2.0]])
        for k in range(1, len(sizes)):
            f[f"Weights/Layer{k}"] = rng.normal(0, 0.5, (sizes[k], sizes[k - 1]))
            f[f"Bias/Layer{k}"] = rng.normal(0, 0.1, (sizes[k], 1))


_TINY_TOML = """\
name = "tiny"
seed = 1

[data]
source = "csv"
path = "table.csv"
features = "x*"
targets = "y"

[[model.layers]]
type = "Dense"
units = 8
activation = "tanh"
[[model.layers]]
type = "Dense"
units = 1

[compile]
optimizer = "adam"
loss = "mse"
metrics = ["mae"]

[fit]
epochs = 2
batch_size = 16
validation_split = 0.2

[tune]
metric = "val_loss"
trials = 2
[tune.space]
"model.layers[0].units" = {int = [4, 16], step = 4}
"""


@pytest.fixture(scope="session")
def _doctest_files(tmp_path_factory) -> dict[str, Path]:
    """Files made once per session and linked into each example's folder."""
    import mlnnkit
    from mlnnkit import legacy
    from mlnnkit.train import save_model

    made = tmp_path_factory.mktemp("doctest-files")
    files = dict(_fixture_files())
    net = made / "net.h5"
    _write_small_network(net)
    files["net.h5"] = net
    save_model(legacy.load(net), made / "net.keras")
    files["net.keras"] = made / "net.keras"
    np.save(made / "rows.npy", np.random.default_rng(1).uniform(0, 1, (100, 7)))
    files["rows.npy"] = made / "rows.npy"
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (200, 3))
    y = np.tanh(x @ [0.5, -0.3, 0.2])
    table = "x1,x2,x3,y\n" + "".join(f"{a:.6f},{b:.6f},{c:.6f},{d:.6f}\n" for (a, b, c), d in zip(x, y))
    (made / "table.csv").write_text(table)
    (made / "tiny.toml").write_text(_TINY_TOML)
    files["table.csv"], files["tiny.toml"] = made / "table.csv", made / "tiny.toml"
    xm = rng.uniform(0, 1, (300, 7)) * np.arange(1.0, 8.0)
    ym = legacy.load(net).predict(xm, verbose=0)[:, 0] * 1.1 + 0.05  # a shifted truth
    rows = "".join(",".join(f"{v:.6f}" for v in (*r, t)) + "\n" for r, t in zip(xm, ym))
    (made / "matchups.csv").write_text("x1,x2,x3,x4,x5,x6,x7,y\n" + rows)
    files["matchups.csv"] = made / "matchups.csv"
    if "PACE_Lrc_aaNN.H5" in files:
        save_model(legacy.load(files["PACE_Lrc_aaNN.H5"], physical=True), made / "pace.keras")
        files["pace.keras"] = made / "pace.keras"
    assert mlnnkit  # imported for the session's examples
    return files


@pytest.fixture(autouse=True)
def _doctest_folder(request):
    """Run each docstring example in its own folder holding the files it names."""
    if type(request.node).__name__ != "DoctestItem":
        yield
        return
    examples = "\n".join(e.source for e in request.node.dtest.examples)
    fixture_names = {p.name for p in FIXTURES.rglob("*")} if FIXTURES.is_dir() else set()
    wanted = ("PACE_Lrc_aaNN.H5", "pace.keras", ".net")
    if not fixture_names and any(w in examples for w in wanted):
        pytest.skip("the example reads a real network of ../shared/fixtures, not present")
    files = request.getfixturevalue("_doctest_files")
    folder = request.getfixturevalue("tmp_path")
    for name, path in files.items():
        (folder / name).symlink_to(path)
    import keras

    import mlnnkit

    ns = request.getfixturevalue("doctest_namespace")
    ns.update(np=np, keras=keras, mlnnkit=mlnnkit)
    old = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)
