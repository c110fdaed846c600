"""Legacy networks as Keras models: import, verify, export, the seed's hand-built model,
the serializable scaling layers, float32 and float64."""

from __future__ import annotations

import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
from _legacy_nets import (
    ffbp_forward,
    inputs_within,
    ocsmart_forward,
    write_ffbp,
    write_ocsmart,
)

from mlnnkit import legacy
from mlnnkit.layers import InputScaling, OutputScaling, snap_sigmoid
from mlnnkit.legacy import ffbp, ocsmart, rawh5, reference
from mlnnkit.models import load_model

SEED_SIZES = [7, 100, 1]


def _h5_arrays(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None
        )
    return out


def test_seed_hand_built_model_predicts_the_same_as_import(cli, tmp_path):
    src = tmp_path / "Lrc_rrsNN.h5"
    data = write_ocsmart(src, SEED_SIZES, seed=3)
    # The seed's way: a Dense stack on inputs the user scales, weights set by hand.
    hand = keras.Sequential(
        [keras.Input((7,)), keras.layers.Dense(100, activation="tanh"), keras.layers.Dense(1)]
    )
    for layer, k in zip(hand.layers, (1, 2)):
        layer.set_weights([data[f"Weights/Layer{k}"].T, data[f"Bias/Layer{k}"].flatten()])
    nin, nout = data["Norm_in"], data["Norm_out"]
    x = inputs_within(nin[:, 0], nin[:, 1], 200)
    xs = 2 * (x - nin[:, 0]) / (nin[:, 1] - nin[:, 0]) - 1
    y_hand = (hand.predict(xs.astype("float32"), verbose=0) + 1) / 2 * (
        nout[:, 1] - nout[:, 0]
    ) + nout[:, 0]

    code, out, err = cli("import", src, "-o", tmp_path / "m.keras", "--samples", "500")
    assert code == 0, err
    assert "passed" in out and "planes 7-100-1" in out
    model = load_model(tmp_path / "m.keras", compile=False)
    y_import = model.predict(x.astype("float32"), verbose=0)
    span = nout[:, 1] - nout[:, 0]
    assert np.max(np.abs(y_import - y_hand)) / span[0] < 2e-6
    y_true = ocsmart_forward(data, x[:20])
    assert np.max(np.abs(y_import[:20] - y_true)) / span[0] < 2e-6
    assert [l.name for l in model.layers] == [
        "inputs",
        "input_scaling",
        "dense_1",
        "dense_2",
        "output_scaling",
    ]
    np.testing.assert_array_equal(
        model.get_layer("dense_1").kernel.numpy(), data["Weights/Layer1"].T.astype("float32")
    )


@pytest.mark.parametrize("sizes", [[7, 100, 1], [5, 8, 6, 3]], ids=lambda s: "-".join(map(str, s)))
def test_ocsmart_round_trip_float32_and_float64(cli, tmp_path, sizes):
    src = tmp_path / "net.h5"
    write_ocsmart(src, sizes, seed=1)
    orig = _h5_arrays(src)
    for dtype in ("float32", "float64"):
        model_path, back = tmp_path / f"{dtype}.keras", tmp_path / f"{dtype}.h5"
        code, _, err = cli("import", src, "-o", model_path, "--dtype", dtype, "--samples", "300")
        assert code == 0, err
        code, out, err = cli("export", model_path, "-o", back, "--samples", "300")
        assert code == 0, err
        assert "wrote ocsmart file" in out and "passed" in out
        got = _h5_arrays(back)
        assert sorted(got) == sorted(orig)
        for name, arr in orig.items():
            assert got[name].shape == arr.shape and got[name].dtype == arr.dtype, name
            if dtype == "float64":
                np.testing.assert_array_equal(got[name], arr, err_msg=name)
            else:
                np.testing.assert_array_equal(
                    got[name].astype(np.float32), arr.astype(np.float32), err_msg=name
                )
        code, out, _ = cli("verify", model_path, back, "--samples", "300")
        assert code == 0 and "passed" in out


def test_ffbp_round_trip_and_snap_sigmoid(cli, tmp_path):
    src = tmp_path / "net.net"
    ws, bs, rin, rout = write_ffbp(src, [5, 9, 7, 3], seed=2)
    code, out, err = cli("import", src, "-o", tmp_path / "m.keras", "--samples", "400")
    assert code == 0, err
    assert "note: SNAP's ffbp reader uses a tabulated sigmoid" in out and "exact sigmoid" in out
    model = load_model(tmp_path / "m.keras", compile=False)
    x = inputs_within(rin[0], rin[1], 30)
    span = rout[1] - rout[0]
    np.testing.assert_array_less(
        np.abs(model.predict(x, verbose=0) - ffbp_forward(ws, bs, rin, rout, x)) / span, 2e-6
    )
    assert legacy.input_ranges(model)[2] == [f"in_{i} var" for i in range(5)]
    assert legacy.source_format(model) == "ffbp"

    code, out, err = cli(
        "export", tmp_path / "m.keras", "-o", tmp_path / "back.net", "--samples", "400"
    )
    assert code == 0, err
    back, orig = ffbp.read(tmp_path / "back.net"), ffbp.read(src)
    assert back.header == orig.header and back.input_names == orig.input_names
    for a, b in zip(back.weights + back.biases, orig.weights + orig.biases):
        np.testing.assert_array_equal(a.astype(np.float32), b.astype(np.float32))

    # --sigmoid snap: SNAP's table, float64 by default, matches the table reference exactly
    code, out, err = cli(
        "import", src, "-o", tmp_path / "snap.keras", "--sigmoid", "snap", "--samples", "400"
    )
    assert code == 0, err
    assert (
        "float64 model" in out
        and "SNAP's tabulated sigmoid" in out
        and "also uses the table" in out
    )
    snap = load_model(tmp_path / "snap.keras", compile=False)
    assert snap.get_layer("dense_1").activation is snap_sigmoid
    spec = ffbp.read(src)
    r_snap = reference.forward(spec, x, "snap")
    got = keras.ops.convert_to_numpy(snap(keras.ops.convert_to_tensor(x)))
    np.testing.assert_allclose(got, r_snap, rtol=0, atol=1e-12 * span.max())
    assert np.max(np.abs(r_snap - reference.forward(spec, x))) > 1e-7  # the two do differ
    code, out, _ = cli(
        "export", tmp_path / "snap.keras", "-o", tmp_path / "snap.net", "--samples", "400"
    )
    assert code == 0 and "passed" in out
    for a, b in zip(ffbp.read(tmp_path / "snap.net").weights, spec.weights):
        np.testing.assert_array_equal(a, b)


def test_rawh5_import_with_patterns_and_export(cli, tmp_path):
    rng = np.random.default_rng(5)
    ws = [rng.normal(size=(6, 3)), rng.normal(size=(4, 6)), rng.normal(size=(2, 4))]
    bs = [rng.normal(size=n) for n in (6, 4, 2)]
    src = tmp_path / "raw.h5"
    with h5py.File(src, "w") as f:
        for i, (w, b) in enumerate(zip(ws, bs)):
            f[f"model/kernel_{i}"] = w.T  # stored as Keras kernels (in, out)
            f[f"model/bias_{i}"] = b
        f["x_range"] = np.array([[0.0, 1.0], [10.0, 20.0], [-5.0, 5.0]])
    code, out, err = cli(
        "import",
        src,
        "-o",
        tmp_path / "m.keras",
        "--format",
        "rawh5",
        "--weights",
        "model/kernel_{i}",
        "--biases",
        "model/bias_{i}",
        "--activations",
        "relu,linear",
        "--norm-in",
        "x_range",
        "--samples",
        "300",
    )
    assert code == 0, err
    assert "activations relu x2, linear" in out and "passed" in out
    model = load_model(tmp_path / "m.keras", compile=False)
    x = np.array([[0.5, 15.0, 0.0], [1.0, 10.0, 5.0]])
    a = -1 + 2 * (x - [0.0, 10.0, -5.0]) / [1.0, 10.0, 10.0]
    for w, b, act in zip(ws, bs, ("relu", "relu", "linear")):
        a = a @ w.T + b
        a = np.maximum(a, 0) if act == "relu" else a
    np.testing.assert_allclose(model.predict(x, verbose=0), a, rtol=1e-5, atol=1e-5)
    # verify reuses the reading options the model remembers
    code, out, err = cli("verify", tmp_path / "m.keras", src, "--samples", "300")
    assert code == 0 and "passed" in out, err
    # rawh5 export keeps the source layout; ocsmart refuses relu
    code, out, err = cli(
        "export", tmp_path / "m.keras", "-o", tmp_path / "back.h5", "--samples", "300"
    )
    assert code == 0, err
    with h5py.File(tmp_path / "back.h5") as f:
        np.testing.assert_array_equal(f["model/kernel_0"][()], ws[0].T.astype(np.float32))
    code, _, err = cli(
        "export", tmp_path / "m.keras", "-o", tmp_path / "x.h5", "--format", "ocsmart"
    )
    assert code == 2 and "tanh on every hidden layer" in err and "relu" in err
    assert not (tmp_path / "x.h5").exists()


def test_export_from_scratch_model_and_refusals(cli, tmp_path):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="tanh")(inputs)
    x = keras.layers.Dropout(0.2)(x)
    x = keras.layers.Dense(5)(x)
    x = keras.layers.Activation("tanh")(x)
    outputs = keras.layers.Dense(2)(x)
    scratch = keras.Model(inputs, outputs)
    scratch.save(tmp_path / "scratch.keras")
    code, _, err = cli(
        "export",
        tmp_path / "scratch.keras",
        "-o",
        tmp_path / "s.h5",
        "--format",
        "ocsmart",
        "--samples",
        "200",
    )
    assert code == 0, err
    spec = ocsmart.read(tmp_path / "s.h5")
    assert spec.sizes == [4, 8, 5, 2] and spec.activations == ["tanh", "tanh", "linear"]
    np.testing.assert_array_equal(spec.input_scaling.minimum, -np.ones(4))  # identity ranges
    xin = np.random.default_rng(0).uniform(-1, 1, (10, 4))
    np.testing.assert_allclose(
        reference.forward(spec, xin), scratch.predict(xin, verbose=0), atol=1e-5
    )
    assert legacy.source_format(scratch) is None and legacy.input_ranges(scratch) is None

    code, _, err = cli("export", tmp_path / "scratch.keras", "-o", tmp_path / "s2.h5")
    assert code == 2 and "pass --format" in err

    conv = keras.Sequential(
        [
            keras.Input((6, 1)),
            keras.layers.Conv1D(2, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    conv.save(tmp_path / "conv.keras")
    code, _, err = cli(
        "export", tmp_path / "conv.keras", "-o", tmp_path / "c.net", "--format", "ffbp"
    )
    assert code == 2 and "flat vectors" in err and not (tmp_path / "c.net").exists()
    flat = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(3, activation="sigmoid"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    flat.save(tmp_path / "bn.keras")
    code, _, err = cli(
        "export", tmp_path / "bn.keras", "-o", tmp_path / "b.net", "--format", "ffbp"
    )
    assert code == 2 and "BatchNormalization" in err and not (tmp_path / "b.net").exists()


def test_verify_fails_with_exit_1_on_a_changed_model(cli, tmp_path):
    src = tmp_path / "net.h5"
    write_ocsmart(src, [4, 6, 3])
    assert cli("import", src, "-o", tmp_path / "m.keras", "--samples", "200")[0] == 0
    model = load_model(tmp_path / "m.keras", compile=False)
    k = model.get_layer("dense_2").kernel
    k.assign(k.numpy() * 1.001)
    model.save(tmp_path / "changed.keras")
    code, out, err = cli("verify", tmp_path / "changed.keras", src, "--samples", "200")
    assert code == 1
    assert out.count("FAIL") >= 1 and "max abs err" in out and "FAILED" in out
    assert err.startswith("error: ") and "does not compute what" in err
    code, _, err = cli(
        "import", src, "-o", tmp_path / "strict.keras", "--tolerance", "1e-12", "--samples", "200",
        "--dtype", "float32",
    )
    assert code == 1 and "--dtype float64" in err and not (tmp_path / "strict.keras").exists()
    # without --dtype, a network float32 cannot meet the tolerance is imported in float64
    code, out, err = cli(
        "import", src, "-o", tmp_path / "auto.keras", "--tolerance", "1e-12", "--samples", "200"
    )
    assert code == 0, err
    assert "importing it in float64 instead" in out and (tmp_path / "auto.keras").exists()


def test_fine_tuned_model_exports_to_its_source_format(tmp_path):
    src = tmp_path / "net.h5"
    write_ocsmart(src, [4, 6, 3])
    model = legacy.load(src, samples=200)
    before = model.get_layer("dense_1").kernel.numpy().copy()
    lo, hi, names = legacy.input_ranges(model)
    x = inputs_within(lo, hi, 64)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(x, model.predict(x, verbose=0) * 1.01, epochs=2, verbose=0)
    assert not np.allclose(model.get_layer("dense_1").kernel.numpy(), before)
    result = legacy.save(model, tmp_path / "tuned.h5", samples=200)
    assert result.passed and result.max_rel_error < 1e-5
    spec = ocsmart.read(tmp_path / "tuned.h5")
    np.testing.assert_array_equal(
        spec.weights[0].astype(np.float32), model.get_layer("dense_1").kernel.numpy().T
    )
    assert names == ["input_1", "input_2", "input_3", "input_4"]


def test_float64_model_matches_the_reference_to_rounding(tmp_path):
    src = tmp_path / "net.h5"
    write_ocsmart(src, [7, 100, 1])
    model = legacy.load(src, dtype="float64", samples=200)
    r = legacy.verify(model, src, samples=500)
    assert r.dtype == "float64" and r.max_rel_error < 1e-13
    assert model.get_layer("dense_1").kernel.dtype == "float64"


def test_scaling_layers_config_round_trip():
    layer = InputScaling(
        [0.0, -1.5],
        [2.0, 3.0],
        network_range=(0, 1),
        names=["a", "b"],
        source_format="ffbp",
        source_options={"k": 1},
        header="h",
        dtype="float64",
    )
    clone = InputScaling.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.minimum == [0.0, -1.5] and clone.dtype_policy.name == "float64"
    out = OutputScaling([1.0], [5.0], network_range=(0, 1))
    y = keras.ops.convert_to_numpy(out(np.array([[0.0], [0.25], [1.0]], dtype="float32")))
    np.testing.assert_allclose(y[:, 0], [1.0, 2.0, 5.0])
    x = keras.ops.convert_to_numpy(layer(np.array([[1.0, 0.75]])))
    np.testing.assert_allclose(x[0], [0.5, 0.5])
    with pytest.raises(ValueError, match="minimum must be below maximum"):
        InputScaling([1.0], [1.0])


def test_saved_model_loads_with_only_import_mlnnkit(tmp_path):
    src = tmp_path / "net.net"
    write_ffbp(src, [3, 4, 2])
    model = legacy.load(src, sigmoid="snap", dtype="float64", samples=100)
    model.save(tmp_path / "m.keras")
    x = np.array([[0.1, 0.2, 0.3]])
    want = keras.ops.convert_to_numpy(model(keras.ops.convert_to_tensor(x)))
    code = (
        "import sys, numpy as np, mlnnkit, keras\n"
        f"m = keras.saving.load_model({str(tmp_path / 'm.keras')!r})\n"
        "print(m.layers[1].names, m.get_layer('dense_1').kernel.dtype)\n"
        "y = keras.ops.convert_to_numpy(m(keras.ops.convert_to_tensor(np.array([[0.1, 0.2, 0.3]]))))\n"
        "print(repr(y.tolist()))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "['in_0 var', 'in_1 var', 'in_2 var'] float64"
    assert eval(lines[1]) == want.tolist()


def test_detect_format_of_keras_files_and_inspect(cli, tmp_path):
    src = tmp_path / "net.h5"
    write_ocsmart(src, [4, 6, 3])
    model = legacy.load(src, samples=100)
    model.save(tmp_path / "m.keras")
    assert legacy.detect_format(tmp_path / "m.keras") == "keras"
    code, out, _ = cli("inspect", tmp_path / "m.keras")
    assert code == 0 and "format:      ocsmart" in out and "planes:      4-6-3" in out
    code, out, _ = cli("inspect", src)
    assert code == 0 and "activations: tanh, linear" in out and "parameters:  51" in out
    assert "inputs (4), scaling min-max to [-1, 1]:" in out


def test_rawh5_written_by_export_reads_back_without_options(tmp_path):
    src = tmp_path / "net.h5"
    write_ocsmart(src, [4, 6, 3])
    model = legacy.load(src, samples=100)
    legacy.save(model, tmp_path / "raw.h5", "rawh5", weights="w/{i}", biases="b/{i}", samples=100)
    assert legacy.detect_format(tmp_path / "raw.h5") == "rawh5"
    spec = rawh5.read(tmp_path / "raw.h5")
    assert spec.sizes == [4, 6, 3] and spec.activations == ["tanh", "linear"]
    assert legacy.verify(model, tmp_path / "raw.h5", samples=100).passed
