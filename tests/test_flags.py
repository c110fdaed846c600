"""Per-pixel quality flags (#12): each bit on crafted rows, the margin, one program."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import mlnnkit
from mlnnkit.layers import InputScaling, InputTransform, OutputScaling, OutputTransform
from mlnnkit.retrieval import FLAG_BITS, flag_attrs, flag_counts, flags_model


def crafted_net() -> keras.Model:
    """x1 (log10) and x2 (identity) in; the network's output ``u = 2 * log10(x1) + 2``
    (x2 has weight 0), out as ``y = 10**u``. Ranges: log10(x1) in [-2, 0], x2 in
    [0, 10], u in [-1, 1]."""
    x = keras.Input((2,), name="inputs")
    h = InputTransform(["log10", "identity"], names=["x1", "x2"], name="input_transform")(x)
    h = InputScaling([-2.0, 0.0], [0.0, 10.0], names=["log_x1", "x2"], name="input_scaling")(h)
    dense = keras.layers.Dense(1, name="dense_1")
    h = dense(h)
    h = OutputScaling([-1.0], [1.0], names=["log_y"], name="output_scaling")(h)
    y = OutputTransform(["pow10"], names=["y"], name="output_transform")(h)
    model = keras.Model(x, y, name="crafted")
    # s1 = log10(x1) + 1 in [-1, 1]; Dense gives 2 * s1, which OutputScaling keeps.
    dense.set_weights([np.array([[2.0], [0.0]]), np.zeros(1)])
    return model


ROWS = [  # (x1, x2) -> expected flags
    ((0.1, 5.0), 0),  # u = 0
    ((0.1, 11.0), 1),  # x2 above its max
    ((0.1, -0.5), 1),  # x2 below its min
    ((10**-0.4, 5.0), 2 | 4),  # u = 1.2: out of range (and so beyond the margin)
    ((10**-1.8, 5.0), 2 | 4),  # u = -1.6 below its min; log10(x1) = -1.8 is in range
    ((10**-0.505, 5.0), 4),  # u = 0.99: within 0.02 of the max
    ((10**-1.495, 5.0), 4),  # u = -0.99: within 0.02 of the min
    ((0.0, 5.0), 16),  # log10 of 0
    ((-1.0, 5.0), 16),  # log10 of a negative value
    ((np.nan, 5.0), 16),
    ((0.1, np.inf), 16),
]


def _rows():
    x = np.array([r for r, _ in ROWS], dtype=np.float32)
    return x, np.array([f for _, f in ROWS], dtype=np.uint8)


def test_each_flag_bit_on_crafted_rows():
    model = crafted_net()
    x, want = _rows()
    y, flags = mlnnkit.predict_array(model, x, flags=True)
    assert flags.dtype == np.uint8 and flags.shape == (len(x),)
    np.testing.assert_array_equal(flags, want)
    # values are written whatever the flags say; invalid rows are NaN
    u = 2 * np.log10(x[:4, 0].astype(np.float64)) + 2
    np.testing.assert_allclose(y[:4, 0], 10**u, rtol=1e-5)
    assert np.isnan(y[want == 16]).all()
    assert np.isfinite(y[want != 16]).all()
    # the same outputs as without flags
    np.testing.assert_array_equal(y, mlnnkit.predict_array(model, x))


def test_limit_margin():
    model = crafted_net()
    x, want = _rows()
    _, none = mlnnkit.predict_array(model, x, flags=True, limit_margin=0.0)
    np.testing.assert_array_equal(none, np.where(want == 4, 0, want))
    _, wide = mlnnkit.predict_array(model, x[:1], flags=True, limit_margin=1.5)
    assert wide.tolist() == [4]  # u = 0 is within 1.5 of both ends
    with pytest.raises(mlnnkit.UserError, match="limit_margin"):
        mlnnkit.predict_array(model, x, flags=True, limit_margin=-1)


def test_flags_come_from_one_program_sharing_the_weights():
    model = crafted_net()
    fm = flags_model(model)
    assert flags_model(model) is fm  # cached: its compiled program is reused
    assert fm.outputs[0] is model.outputs[0]
    layers = {id(l) for l in model.layers}
    assert all(id(l) in layers for l in fm.layers if l.name != "quality_flags")
    model.get_layer("dense_1").set_weights([np.array([[0.0], [0.0]]), np.zeros(1)])  # u = 0 always
    x, _ = _rows()
    y, flags = mlnnkit.predict_array(model, x[:4], flags=True)
    np.testing.assert_allclose(y[:, 0], 1.0)
    assert flags.tolist() == [0, 1, 1, 0]


def test_model_without_scaling_layers_only_flags_invalid_input():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    x = np.array([[1e9, 0.0], [np.nan, 0.0]], np.float32)
    _, flags = mlnnkit.predict_array(model, x, flags=True)
    assert flags.tolist() == [0, 16]


def test_flag_attrs_and_counts():
    attrs = flag_attrs()
    assert attrs["flag_masks"].tolist() == [1, 2, 4, 8, 16]
    assert attrs["flag_meanings"].split() == [n for n, _, _ in FLAG_BITS]
    counts = flag_counts(np.array([0, 1, 3, 16, 24], np.uint8))
    assert counts == {
        "input_out_of_range": 2, "output_out_of_range": 1, "output_at_limit": 0,
        "out_of_scope": 1, "invalid_input": 2,
    }  # fmt: skip
