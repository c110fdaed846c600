"""`mlnnkit finetune` on imported legacy networks: an OC-SMART 7-100-1 file (the seed's
shape, generated here) and the real OC-SMART fixture when ../shared is present."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from mlnnkit import finetune as ft
from mlnnkit import legacy


def write_ocsmart(path: Path, sizes=(7, 100, 1), seed: int = 0) -> Path:
    """A network in the OC-SMART MLNN HDF5 layout (FORMATS.md), random weights."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f["Layers"] = np.array(sizes, dtype="int16")
        lo = rng.uniform(-3, 0, sizes[0])
        f["Norm_in"] = np.stack([lo, lo + rng.uniform(0.5, 3, sizes[0])], axis=1)
        f["Norm_out"] = np.stack([np.full(sizes[-1], -2.0), np.full(sizes[-1], 1.5)], axis=1)
        for k in range(1, len(sizes)):
            shape = (sizes[k], sizes[k - 1])
            f[f"Weights/Layer{k}"] = rng.normal(0, 1 / np.sqrt(sizes[k - 1]), shape)
            f[f"Bias/Layer{k}"] = rng.normal(0, 0.1, (sizes[k], 1))
    return path


def shifted_rows(model, n: int, seed: int = 0, gain: float = 1.1, shift: float = 0.1):
    mins, maxs, _ = legacy.input_ranges(model)
    x = np.random.default_rng(seed).uniform(mins, maxs, (n, len(mins)))
    y = np.asarray(model.predict(x.astype("float32"), verbose=0), dtype="float64")
    return x, gain * y + shift * (y.max(axis=0) - y.min(axis=0))


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Path:
    return write_ocsmart(tmp_path_factory.mktemp("net") / "net_7_100_1.h5")


def test_range_warning_names_rows_and_inputs(net, tmp_path, cli):
    model = legacy.load(net)
    mins, maxs, names = legacy.input_ranges(model)
    x, y = shifted_rows(model, 200)
    x[:30, 3] = maxs[3] + 0.5  # 15% of rows above the range of input 4
    x[:10, 0] = mins[0] - 1.0  # 5% below the range of input 1
    assert ft.range_warning(model, x[30:]) is None
    np.savez(tmp_path / "d.npz", x=x, y=y)
    code, _, err = cli(
        "finetune", net, "--data", tmp_path / "d.npz", "-o", tmp_path / "o", "--epochs", "2"
    )
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1, err
    line = lines[0]
    assert "15.0% of rows (30 of 200)" in line
    assert f"{names[3]} 15.0% [{mins[3]:.4g}, {maxs[3]:.4g}]" in line
    assert f"{names[0]} 5.0%" in line
    assert names[1] not in line
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["input_range_warning"] == line[len("warning: ") :]


def test_shifted_legacy_network_finetunes_and_exports(net, tmp_path, cli):
    """The acceptance on the seed's 7-100-1 shape: 1,250 rows (1,000 to fine-tune on: 800
    fitted, 200 for early stopping; 250 held out), outputs * 1.1 + 10% of their spread."""
    model = legacy.load(net)
    x, y = shifted_rows(model, 1250, seed=1)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "run"
    code, stdout, err = cli(
        "finetune", net, "--data", tmp_path / "d.npz", "-o", out, "--compare-scratch",
        "--freeze", "0", "--epochs", "100",
    )
    assert code == 0, err
    assert "warning" not in err  # rows drawn inside the network's ranges
    rep = json.loads((out / "report.json").read_text())
    assert rep["source_format"] == "ocsmart"
    assert (rep["n_train"], rep["n_val"], rep["n_test"]) == (800, 200, 250)
    assert rep["finetuned"]["rmse"] <= 0.5 * rep["original"]["rmse"], rep
    assert rep["finetuned"]["rmse"] < rep["scratch"]["rmse"], rep
    assert "fine-tuning helped" in stdout
    # written back as OC-SMART: same layout, same predictions as model.keras
    assert "model.h5" in rep["files"]
    with h5py.File(out / "model.h5", "r") as f, h5py.File(net, "r") as g:
        assert list(f["Layers"][()]) == [7, 100, 1]
        np.testing.assert_array_equal(f["Norm_in"][()], g["Norm_in"][()])  # scaling kept
        assert not np.allclose(f["Bias/Layer2"][()], g["Bias/Layer2"][()])  # tuned
    tuned = keras.saving.load_model(out / "model.keras")
    again = legacy.load(out / "model.h5")
    xs = x[:50].astype("float32")
    np.testing.assert_allclose(
        again.predict(xs, verbose=0), tuned.predict(xs, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_scaling_layers_stay_fixed_and_scratch_keeps_them(net):
    model = legacy.load(net)
    before = [
        (ly.name, [w.copy() for w in ly.get_weights()], ly.get_config())
        for ly in model.layers
        if type(ly).__module__.startswith("mlnnkit.")
    ]
    assert len(before) == 2  # InputScaling, OutputScaling
    x, y = shifted_rows(model, 100)
    res = ft.finetune(model, x, y, lr=1e-2, epochs=3, compare_scratch=True, verbose=0)
    for name, weights, config in before:
        for a, b in zip(weights, res.model.get_layer(name).get_weights()):
            assert np.array_equal(a, b)
        assert res.model.get_layer(name).get_config() == config
        assert res.scratch_model.get_layer(name).get_config() == config
    assert legacy.input_ranges(res.scratch_model) is not None


def test_ocsmart_fixture_finetunes(fixtures_dir, tmp_path):
    """The real OC-SMART network (111-111-57-111-107) on shifted outputs."""
    path = fixtures_dir / "ocsmart" / "PACE_Lrc_aaNN.H5"
    model = legacy.load(path)
    x, y = shifted_rows(model, 500, seed=2)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    res = ft.run(path, tmp_path / "d.npz", tmp_path / "o", lr=1e-3, epochs=30, verbose=0)
    rep = res.report
    assert rep["finetuned"]["rmse"] <= 0.5 * rep["original"]["rmse"], rep
    assert len(rep["per_output"]) == 107
    with h5py.File(tmp_path / "o" / "model.h5", "r") as f:
        assert list(f["Layers"][()]) == [111, 111, 57, 111, 107]
