"""Retrievals in physical units (#11): the transform layers, io_names, the recipes, the
physical import, verify/export, predict and fine-tuning on physical values."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest

import mlnnkit
from mlnnkit.layers import (
    INPUT_TRANSFORMS,
    OUTPUT_TRANSFORMS,
    InputScaling,
    InputTransform,
    OutputScaling,
    OutputTransform,
    transform_numpy,
)

# NumPy's own formulas, written out here (not mlnnkit's transform_numpy).
NUMPY_FORWARD = {
    "identity": lambda x: x,
    "log10": np.log10,
    "ln": np.log,
    "cos_deg": lambda x: np.cos(np.deg2rad(x)),
    "pow10": lambda x: np.power(10.0, x),
    "exp": np.exp,
}
DOMAIN = {  # physical values each transform meets in practice
    "identity": (-50.0, 50.0),
    "log10": (1e-5, 10.0),
    "ln": (1e-5, 10.0),
    "cos_deg": (0.0, 180.0),
    "pow10": (-6.0, 2.0),
    "exp": (-12.0, 3.0),
}


def _columns(kinds, n=400, seed=0):
    rng = np.random.default_rng(seed)
    cols = []
    for k in kinds:
        lo, hi = DOMAIN[k]
        if k in ("log10", "ln"):
            cols.append(10 ** rng.uniform(np.log10(lo), np.log10(hi), n))
        else:
            cols.append(rng.uniform(lo, hi, n))
    return np.stack(cols, axis=1)


def _model(layer_cls, kinds, dtype):
    inputs = keras.Input((len(kinds),), dtype=dtype)
    return keras.Model(inputs, layer_cls(list(kinds), dtype=dtype)(inputs))


@pytest.mark.parametrize("dtype,rtol", [("float32", 2e-6), ("float64", 1e-13)])
@pytest.mark.parametrize(
    "layer_cls,vocab", [(InputTransform, INPUT_TRANSFORMS), (OutputTransform, OUTPUT_TRANSFORMS)]
)
def test_every_transform_matches_numpy(layer_cls, vocab, dtype, rtol):
    kinds = list(vocab) * 2
    x = _columns(kinds)
    model = _model(layer_cls, kinds, dtype)
    y = np.asarray(model(x.astype(dtype)))  # (Model.predict would cast to float32)
    assert y.dtype == np.dtype(dtype)
    want = np.stack([NUMPY_FORWARD[k](x[:, j]) for j, k in enumerate(kinds)], axis=1)
    # error relative to each column's spread (cosines cross zero; logs of 1 are 0)
    scale = np.maximum(np.abs(want).max(axis=0), 1.0)
    err = np.abs(y - want) / scale
    assert err.max() < rtol * (10 if layer_cls is OutputTransform else 1), err.max(axis=0)
    np.testing.assert_allclose(
        np.stack([transform_numpy(k, x[:, j]) for j, k in enumerate(kinds)], axis=1),
        want,
        rtol=1e-15,
        atol=1e-15,
    )


def test_inverse_transforms_undo_the_forward_ones():
    x = _columns(list(INPUT_TRANSFORMS) + list(OUTPUT_TRANSFORMS[1:]))
    for j, k in enumerate(list(INPUT_TRANSFORMS) + list(OUTPUT_TRANSFORMS[1:])):
        if k in OUTPUT_TRANSFORMS:
            back = transform_numpy(k, transform_numpy(k, x[:, j]), inverse=True)
        else:
            back = transform_numpy(k, transform_numpy(k, x[:, j]), inverse=True)
        np.testing.assert_allclose(back, x[:, j], rtol=1e-9, atol=1e-9, err_msg=k)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_non_positive_under_a_log_and_nan_inf_give_nan_in_that_column_only(dtype):
    kinds = ["cos_deg", "log10", "ln", "identity"]
    x = np.array(
        [
            [30.0, 0.01, 2.0, 5.0],  # fine
            [30.0, 0.0, 2.0, 5.0],  # zero under log10
            [30.0, 0.01, -1.0, 5.0],  # negative under ln
            [np.nan, 0.01, 2.0, 5.0],  # NaN angle
            [30.0, 0.01, 2.0, np.inf],  # Inf under identity
            [30.0, np.inf, 2.0, 5.0],  # Inf under log
            [-30.0, 0.01, 2.0, -5.0],  # negatives are fine outside logs
        ]
    ).astype(dtype)
    y = np.asarray(_model(InputTransform, kinds, dtype).predict(x, verbose=0))
    nan = np.isnan(y)
    expected = np.zeros_like(nan)
    expected[1, 1] = expected[2, 2] = expected[3, 0] = expected[4, 3] = expected[5, 1] = True
    np.testing.assert_array_equal(nan, expected)
    assert np.isfinite(y[~nan]).all()  # never -inf
    out = np.asarray(
        _model(OutputTransform, ["pow10", "exp", "identity"], dtype).predict(
            np.array([[np.nan, 1.0, np.inf], [1.0, np.nan, 2.0]], dtype), verbose=0
        )
    )
    np.testing.assert_array_equal(np.isnan(out), [[True, False, True], [False, True, False]])


def test_transform_layers_validate_their_arguments():
    with pytest.raises(ValueError, match="unknown transform.*sqrt"):
        InputTransform(["log10", "sqrt"])
    with pytest.raises(ValueError, match="unknown transform.*log10"):
        OutputTransform(["log10"])  # log10 is an input transform; outputs take pow10
    with pytest.raises(ValueError, match="2 `names` for 3 transforms"):
        InputTransform(["ln"] * 3, names=["a", "b"])
    with pytest.raises(ValueError, match="one name per variable"):
        InputTransform("log10")
    with pytest.raises(ValueError, match="has 2 transforms but receives 3"):
        InputTransform(["ln", "ln"])(keras.Input((3,)))
    layer = InputTransform(["ln"], trainable=True)
    assert layer.trainable is False and layer.weights == []


def _physical_model(dtype="float32"):
    inputs = keras.Input((3,), name="inputs", dtype=dtype)
    x = InputTransform(
        ["cos_deg", "log10", "identity"],
        names=["solz", "Lrc_1", "t"],
        network_names=["cos_solz", "log10_Lrc_1", "t"],
        name="input_transform",
        dtype=dtype,
    )(inputs)
    x = InputScaling(
        [0.2, -3.0, 0.0], [1.0, 0.0, 30.0], names=["cos_solz", "log10_Lrc_1", "t"],
        name="input_scaling", dtype=dtype,
    )(x)
    x = keras.layers.Dense(4, activation="tanh", dtype=dtype)(x)
    x = keras.layers.Dense(2, dtype=dtype)(x)
    x = OutputScaling([-4.0, -1.0], [0.0, 1.0], names=["log_a", "log_b"],
                      name="output_scaling", dtype=dtype)(x)
    out = OutputTransform(["pow10", "exp"], names=["a", "b"], network_names=["log_a", "log_b"],
                          name="output_transform", dtype=dtype)(x)
    return keras.Model(inputs, out)


def test_io_names_physical_bare_and_unnamed():
    model = _physical_model()
    assert mlnnkit.io_names(model) == (["solz", "Lrc_1", "t"], ["a", "b"])
    assert "io_names" in mlnnkit.__all__
    from mlnnkit.models import io_names

    assert io_names is mlnnkit.io_names
    # the bare network inside: the scaling layers' (network-space) names
    bare = keras.Model(model.get_layer("input_scaling").input,
                       model.get_layer("output_scaling").output)
    assert io_names(bare) == (["cos_solz", "log10_Lrc_1", "t"], ["log_a", "log_b"])
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert io_names(plain) == (None, None)


def test_physical_model_saves_and_reloads_with_import_mlnnkit_alone(tmp_path):
    model = _physical_model()
    x = np.array([[30.0, 0.01, 12.0], [60.0, 0.5, 3.0], [10.0, -1.0, 3.0]], "float32")
    want = np.asarray(model.predict(x, verbose=0))
    assert np.isnan(want[2]).all() and np.isfinite(want[:2]).all()
    path = tmp_path / "phys.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "want.npy", want)
    code = f"""
import mlnnkit, keras, numpy as np
m = keras.saving.load_model({str(path)!r})
x = np.load({str(tmp_path / 'x.npy')!r}); want = np.load({str(tmp_path / 'want.npy')!r})
got = np.asarray(m.predict(x, verbose=0))
np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
np.testing.assert_allclose(got[:2], want[:2], rtol=1e-6)
t = m.get_layer("input_transform")
assert type(t).__name__ == "InputTransform" and t.transforms == ["cos_deg", "log10", "identity"]
assert t.network_names == ["cos_solz", "log10_Lrc_1", "t"] and not t.trainable
print(mlnnkit.io_names(m))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "(['solz', 'Lrc_1', 't'], ['a', 'b'])" in res.stdout


def test_float64_physical_model_round_trips_in_float64(tmp_path):
    model = _physical_model("float64")
    path = tmp_path / "phys64.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    assert again.get_layer("output_transform").compute_dtype == "float64"
    x = np.array([[30.0, 0.01, 12.0]])
    y = np.asarray(again(x))
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, np.asarray(model(x)))
