"""Readers, writers and the float64 reference of the legacy formats (no Keras here)."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from _legacy_nets import (
    ffbp_forward,
    inputs_within,
    ocsmart_forward,
    random_net,
    write_ffbp,
    write_ocsmart,
)

from mlnnkit import legacy
from mlnnkit.errors import UserError
from mlnnkit.legacy import ffbp, ocsmart, rawh5, reference
from mlnnkit.legacy.spec import NetworkSpec, Scaling

SHAPES = [[7, 100, 1], [4, 6, 5, 3], [3, 2]]


@pytest.mark.parametrize("sizes", SHAPES, ids=lambda s: "-".join(map(str, s)))
def test_ocsmart_read_and_reference_match_the_formats_math(tmp_path, sizes):
    path = tmp_path / "net.h5"
    data = write_ocsmart(path, sizes, seed=len(sizes))
    spec = ocsmart.read(path)
    assert spec.sizes == sizes
    assert spec.activations == ["tanh"] * (len(sizes) - 2) + ["linear"]
    for k, w in enumerate(spec.weights, start=1):
        np.testing.assert_array_equal(w, data[f"Weights/Layer{k}"])  # (out, in) as stored
    x = inputs_within(data["Norm_in"][:, 0], data["Norm_in"][:, 1], 5)
    np.testing.assert_allclose(
        reference.forward(spec, x), ocsmart_forward(data, x), rtol=1e-12, atol=1e-12
    )
    assert legacy.detect_format(path) == "ocsmart"


@pytest.mark.parametrize(
    "sizes", [[5, 4, 3], [3, 6, 6, 2], [2, 1]], ids=lambda s: "-".join(map(str, s))
)
def test_ffbp_read_and_reference_match_the_formats_math(tmp_path, sizes):
    path = tmp_path / "net.net"
    ws, bs, rin, rout = write_ffbp(path, sizes, seed=len(sizes), trailing_newline=len(sizes) != 3)
    spec = ffbp.read(path)
    assert spec.sizes == sizes and spec.activations == ["sigmoid"] * (len(sizes) - 1)
    assert spec.input_names == [f"in_{i} var" for i in range(sizes[0])]
    assert spec.output_names == [f"out_{i}" for i in range(sizes[-1])]
    assert spec.header.startswith("problem: /data/test/generated")
    x = inputs_within(rin[0], rin[1], 5)
    np.testing.assert_allclose(
        reference.forward(spec, x), ffbp_forward(ws, bs, rin, rout, x), rtol=1e-12
    )
    assert legacy.detect_format(path) == "ffbp"


def test_ffbp_without_names_in_header(tmp_path):
    write_ffbp(tmp_path / "n.net", [3, 4, 2], names=False)
    spec = ffbp.read(tmp_path / "n.net")
    assert spec.input_names is None and spec.names_in() == ["input_1", "input_2", "input_3"]


def _spec(sizes, acts, target=(-1.0, 1.0), seed=0):
    ws, bs = random_net(sizes, seed)
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-5, 0, sizes[0])
    lo_o = rng.uniform(-5, 0, sizes[-1])
    return NetworkSpec(
        weights=ws,
        biases=bs,
        activations=acts,
        input_scaling=Scaling(lo, lo + 3.7, target),
        output_scaling=Scaling(lo_o, lo_o + 1.3, target),
        input_names=[f"x{i}" for i in range(sizes[0])],
        output_names=[f"y{i}" for i in range(sizes[-1])],
    )


def _assert_same_arrays(a: NetworkSpec, b: NetworkSpec):
    assert a.sizes == b.sizes and a.activations == b.activations
    for x, y in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(x, y)
    for s, t in ((a.input_scaling, b.input_scaling), (a.output_scaling, b.output_scaling)):
        np.testing.assert_array_equal(s.minimum, t.minimum)
        np.testing.assert_array_equal(s.maximum, t.maximum)
        assert s.target == t.target


@pytest.mark.parametrize(
    "module,acts,target",
    [
        (ocsmart, ["tanh", "tanh", "linear"], (-1.0, 1.0)),
        (ffbp, ["sigmoid"] * 3, (0.0, 1.0)),
        (rawh5, ["relu", "sigmoid", "linear"], (0.0, 2.0)),
    ],
    ids=lambda v: getattr(v, "NAME", None),
)
def test_writers_round_trip_every_array_exactly(tmp_path, module, acts, target):
    spec = _spec([4, 6, 5, 3], acts, target)
    path = tmp_path / f"net.{module.NAME}"
    module.write(spec, path)
    back = module.read(path)
    _assert_same_arrays(spec, back)
    assert back.input_names == spec.input_names and back.output_names == spec.output_names


def test_ffbp_writer_keeps_the_header_and_drops_hash_characters(tmp_path):
    spec = _spec([3, 4, 2], ["sigmoid"] * 2, (0.0, 1.0))
    spec.header = "problem: a # in the text\nsaved at now"
    ffbp.write(spec, tmp_path / "a.net")
    text = (tmp_path / "a.net").read_text()
    assert text.index("#") == text.index("\n#\n") + 1  # SNAP stops at the first '#'
    assert ffbp.read(tmp_path / "a.net").header == "problem: a  in the text\nsaved at now"


def test_ffbp_float32_precision_writes_shortest_decimals(tmp_path):
    spec = _spec([3, 4, 2], ["sigmoid"] * 2, (0.0, 1.0))
    spec.weights = [w.astype(np.float32).astype(np.float64) for w in spec.weights]
    spec.precision = "float32"
    ffbp.write(spec, tmp_path / "a.net")
    back = ffbp.read(tmp_path / "a.net")
    for w, v in zip(spec.weights, back.weights):
        np.testing.assert_array_equal(w.astype(np.float32), v.astype(np.float32))
    assert ffbp.format_number(0.009782, "float32") == "0.009782"


def test_writers_refuse_what_the_format_cannot_express():
    with pytest.raises(UserError, match="tanh on every hidden layer"):
        ocsmart.check_writable(_spec([3, 4, 2], ["relu", "linear"]))
    with pytest.raises(UserError, match="scales inputs to \\[-1, 1\\]"):
        ocsmart.check_writable(_spec([3, 4, 2], ["tanh", "linear"], (0.0, 1.0)))
    with pytest.raises(UserError, match="sigmoid on every plane"):
        ffbp.check_writable(_spec([3, 4, 2], ["sigmoid", "linear"], (0.0, 1.0)))
    with pytest.raises(UserError, match="scales inputs to \\[0, 1\\]"):
        ffbp.check_writable(_spec([3, 4, 2], ["sigmoid", "sigmoid"]))


# ---- rawh5 -------------------------------------------------------------------------


def _write_raw(
    path, ws, bs, *, keras_orientation=False, start=1, names=("W{i}", "b{i}"), norm=None
):
    with h5py.File(path, "w") as f:
        for k, (w, b) in enumerate(zip(ws, bs), start=start):
            f[names[0].format(i=k)] = w.T if keras_orientation else w
            f[names[1].format(i=k)] = b
        for name, arr in (norm or {}).items():
            f[name] = arr


@pytest.mark.parametrize("keras_orientation", [False, True])
@pytest.mark.parametrize("start", [0, 1])
def test_rawh5_finds_orientation_from_the_shapes(tmp_path, keras_orientation, start):
    ws, bs = random_net([7, 100, 1])
    path = tmp_path / "raw.h5"
    _write_raw(path, ws, bs, keras_orientation=keras_orientation, start=start)
    spec = rawh5.read(path, weights="W{i}", biases="b{i}", activations="tanh,linear")
    assert spec.sizes == [7, 100, 1]
    np.testing.assert_array_equal(spec.weights[0], ws[0])
    assert spec.source_options["transpose"] is keras_orientation
    assert legacy.detect_format(path) == "rawh5"


def test_rawh5_square_layers_need_an_explicit_orientation(tmp_path):
    ws, bs = random_net([5, 5, 5])
    _write_raw(tmp_path / "sq.h5", ws, bs)
    with pytest.raises(UserError, match="--no-transpose if they are stored \\(out, in\\)"):
        rawh5.read(tmp_path / "sq.h5", weights="W{i}", biases="b{i}", activations="tanh,linear")
    spec = rawh5.read(
        tmp_path / "sq.h5", weights="W{i}", biases="b{i}", activations="tanh,linear", transpose=True
    )
    np.testing.assert_array_equal(spec.weights[1], ws[1].T)


def test_rawh5_activations_per_layer_pair_or_one(tmp_path):
    ws, bs = random_net([3, 4, 4, 4, 2])
    _write_raw(tmp_path / "r.h5", ws, bs)
    read = lambda acts: rawh5.read(
        tmp_path / "r.h5", weights="W{i}", biases="b{i}", activations=acts
    )
    assert read("tansig,purelin").activations == ["tanh", "tanh", "tanh", "linear"]
    assert read("relu").activations == ["relu"] * 4
    assert read("relu,tanh,sigmoid,linear").activations == ["relu", "tanh", "sigmoid", "linear"]
    with pytest.raises(UserError, match="3 activations .* for 4 layers"):
        read("relu,tanh,linear")


def test_rawh5_scaling_datasets_and_range(tmp_path):
    ws, bs = random_net([3, 4, 2])
    lo, hi = np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0])
    norm = {"norm/x": np.stack([lo, hi]), "norm/y": np.array([[0.0, 10.0], [-1.0, 1.0]])}
    _write_raw(tmp_path / "r.h5", ws, bs, norm=norm)
    spec = rawh5.read(
        tmp_path / "r.h5",
        weights="W{i}",
        biases="b{i}",
        activations="sigmoid",
        norm_in="norm/x",
        norm_out="norm/y",
        scale_range="0,1",
    )
    np.testing.assert_array_equal(spec.input_scaling.minimum, lo)  # (2, n) accepted
    np.testing.assert_array_equal(spec.output_scaling.maximum, [10.0, 1.0])  # (n, 2)
    assert spec.input_scaling.target == (0.0, 1.0)
    y = reference.forward(spec, hi[None, :])
    a = 1 / (1 + np.exp(-(ws[0] @ np.ones(3) + bs[0])))
    a = 1 / (1 + np.exp(-(ws[1] @ a + bs[1])))
    np.testing.assert_allclose(y[0], [a[0] * 10.0, a[1] * 2.0 - 1.0], rtol=1e-13)


def test_rawh5_written_files_describe_themselves(tmp_path):
    spec = _spec([4, 6, 5, 3], ["relu", "tanh", "linear"])
    rawh5.write(spec, tmp_path / "r.h5", weights="net/w_{i}", biases="net/b_{i}", transpose=True)
    back = rawh5.read(tmp_path / "r.h5")  # no options needed
    _assert_same_arrays(spec, back)
    with h5py.File(tmp_path / "r.h5") as f:
        assert f["net/w_1"].shape == (4, 6)  # stored (in, out) as asked


# ---- SNAP's tabulated sigmoid, exactly as FORMATS.md gives it ----------------------


def test_snap_sigmoid_follows_formats_md():
    delta = 20 / (100000 - 1)
    table = reference.snap_table()
    assert table.shape == (100000,)
    assert table[0] == 1 / (1 + math.exp(-(-10 + 0.5 * delta)))
    assert table[12345] == 1 / (1 + math.exp(-(-10 + 12345.5 * delta)))
    for t in (-3.21, 0.0, 0.7, 9.9999, -10.0):
        i = int((t + 10) / delta)  # Python's int() truncates toward zero, like Java's cast
        assert reference.snap_sigmoid(np.array([t]))[0] == table[min(max(i, 0), 99999)]
    assert reference.snap_sigmoid(np.array([-50.0, -10.00001, 10.0, 50.0])).tolist() == [
        table[0],
        table[0],
        table[99999],
        table[99999],
    ]
    t = np.linspace(-9, 9, 10001)
    assert np.max(np.abs(reference.snap_sigmoid(t) - reference.exact_sigmoid(t))) < 5.1e-5


def test_sample_inputs_cover_the_edges():
    lo, hi = np.array([-2.0, 10.0]), np.array([3.0, 10.5])
    x = reference.sample_inputs(lo, hi, 500)
    np.testing.assert_array_equal(x[0], lo)
    np.testing.assert_array_equal(x[1], hi)
    assert (x >= lo).all() and (x <= hi).all()
    assert ((x == lo).sum(axis=0) > 20).all() and ((x == hi).sum(axis=0) > 20).all()


def test_describe_lists_names_and_ranges(tmp_path):
    write_ffbp(tmp_path / "n.net", [3, 4, 2])
    text = ffbp.read(tmp_path / "n.net").describe()
    assert "planes:      3-4-2 (2 layers)" in text
    assert "activations: sigmoid x2" in text
    assert "in_0 var" in text and "out_1" in text
