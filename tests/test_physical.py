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
    if dtype == "float64":
        mlnnkit.float64()  # the documented switch (the layers only warn without it)
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
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "(['solz', 'Lrc_1', 't'], ['a', 'b'])" in res.stdout


def test_float64_physical_model_round_trips_in_float64(tmp_path):
    mlnnkit.float64()  # the documented switch (the layers only warn without it)
    model = _physical_model("float64")
    path = tmp_path / "phys64.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    assert again.get_layer("output_transform").compute_dtype == "float64"
    x = np.array([[30.0, 0.01, 12.0]])
    y = np.asarray(again(x))
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, np.asarray(model(x)))


# --- recipes on generated files of each family's shape ------------------------------------

from _legacy_nets import random_net, write_ocsmart

from mlnnkit import legacy
from mlnnkit.errors import UserError
from mlnnkit.retrieval import _recipes

# (file name, angles, bands, extra inputs, outputs, first input name, first output name)
FAMILIES = [
    ("PACE_Lrc_aaNN.H5", 3, 6, 1, 6, "Lrc_1", "Lrc_1"),
    ("MODIS-Aqua_Lrc_aodNN.h5", 3, 5, 1, 2, "Lrc_1", "aod_1"),
    ("S2A_Lrc_rrsNN.h5", 3, 4, 0, 4, "Lrc_1", "Rrs_1"),
    ("OLCI_Lrc_LrcaNN.h5", 3, 5, 0, 5, "Lrc_1", "Lrca_1"),
    ("OLCI_aphNN.h5", 0, 6, 0, 3, "Rrs_1", "aph_1"),
    ("VIIRS_adgNN.h5", 0, 5, 0, 2, "Rrs_1", "adg_1"),
    ("olci_BBPNN.H5", 0, 4, 0, 4, "Rrs_1", "bbp_1"),
    ("PACE_apNN.h5", 0, 4, 0, 1, "Rrs_1", "ap_1"),
    ("PACE_bpNN.h5", 0, 3, 0, 2, "Rrs_1", "bp_1"),
]


def write_family(path, n_angles, n_bands, n_extra, n_out, seed=0, hidden=(8, 6)):
    """An OC-SMART file of a family's shape with realistic ranges (cosines, log10)."""
    rng = np.random.default_rng(seed)
    n_in = n_angles + n_bands + n_extra
    cos_lo = rng.uniform(0.1, 0.5, n_angles)
    log_lo = rng.uniform(-5.5, -4.0, n_bands + n_extra)
    lo_in = np.concatenate([cos_lo, log_lo])
    hi_in = np.concatenate([np.ones(n_angles), log_lo + rng.uniform(2.0, 3.5, log_lo.size)])
    lo_out = rng.uniform(-4.0, -3.0, n_out)
    hi_out = lo_out + rng.uniform(2.0, 3.0, n_out)

    def ranges(d):
        d["Norm_in"] = np.stack([lo_in, hi_in], axis=1)
        d["Norm_out"] = np.stack([lo_out, hi_out], axis=1)

    return write_ocsmart(path, [n_in, *hidden, n_out], seed=seed, mutate=ranges)


def ocsmart_physical(data, n_angles, x_phys):
    """OC-SMART's own computation, vectorised NumPy float64: cos(radians) of the angles,
    log10 of the rest, mapminmax to [-1, 1], tanh layers, linear output, back, 10**."""
    x = np.asarray(x_phys, np.float64)
    xn = np.concatenate([np.cos(np.radians(x[:, :n_angles])), np.log10(x[:, n_angles:])], axis=1)
    nin, nout = data["Norm_in"], data["Norm_out"]
    a = 2 * (xn - nin[:, 0]) / (nin[:, 1] - nin[:, 0]) - 1
    n_layers = len(data["Layers"]) - 1
    for k in range(1, n_layers + 1):
        z = a @ np.asarray(data[f"Weights/Layer{k}"]).T + np.asarray(data[f"Bias/Layer{k}"]).ravel()
        a = np.tanh(z) if k < n_layers else z
    return 10 ** ((a + 1) / 2 * (nout[:, 1] - nout[:, 0]) + nout[:, 0])


def physical_inputs(data, n_angles, n, seed=1):
    """Physical values inside the network's ranges: angles in degrees, positive values."""
    nin = data["Norm_in"]
    rng = np.random.default_rng(seed)
    xn = nin[:, 0] + rng.uniform(0.02, 0.98, (n, len(nin))) * (nin[:, 1] - nin[:, 0])
    return np.concatenate(
        [np.degrees(np.arccos(xn[:, :n_angles])), 10 ** xn[:, n_angles:]], axis=1
    )


def test_recipe_vocabulary_is_the_layers_vocabulary():
    assert _recipes.INPUT_TRANSFORMS == INPUT_TRANSFORMS
    assert _recipes.OUTPUT_TRANSFORMS == OUTPUT_TRANSFORMS


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f[0])
def test_each_ocsmart_family_imports_physical_and_matches_ocsmart(tmp_path, fam):
    name, n_ang, n_bands, n_extra, n_out, first_in, first_out = fam
    path = tmp_path / name
    data = write_family(path, n_ang, n_bands, n_extra, n_out)
    model = legacy.load(path, physical=True, samples=500)
    ins, outs = mlnnkit.io_names(model)
    angles = ["solz", "senz", "relaz"][:n_ang]
    assert ins[:n_ang] == angles and ins[n_ang] == first_in
    assert len(ins) == n_ang + n_bands + n_extra and outs[0] == first_out
    assert outs[-1] == f"{first_out[:-2]}_{n_out}"
    if n_extra:
        assert ins[-1] == "rh" and ins[-2] == f"Lrc_{n_bands}"
    t = model.get_layer("input_transform").transforms
    assert t == ["cos_deg"] * n_ang + ["log10"] * (n_bands + n_extra)
    assert model.get_layer("output_transform").transforms == ["pow10"] * n_out
    x = physical_inputs(data, n_ang, 300).astype("float32")
    got = np.asarray(model.predict(x, verbose=0), np.float64)
    want = ocsmart_physical(data, n_ang, x.astype(np.float64))
    assert np.max(np.abs(got / want - 1)) < 1e-5


def test_family_names_ignore_case_and_sensor_prefix():
    f = _recipes.ocsmart_family
    assert f("PACE_Lrc_aaNN.H5") == f("pace_lrc_AANN.h5") == "Lrc_aaNN"
    assert f("MODIS-Aqua_Lrc_aodNN.h5") == "Lrc_aodNN"
    assert f("Lrc_rrsNN.h5") == "Lrc_rrsNN"  # no sensor prefix
    assert f("OLCI_apNN.h5") == "apNN" and f("OLCI_aphNN.h5") == "aphNN"
    assert f("OLCI_bpNN.h5") == "bpNN" and f("OLCI_bbpNN.h5") == "bbpNN"
    for other in ("net.h5", "OLCI_aphNN_v2.h5", "OLCI_xaphNN.h5", "OLCI_Lrc_aa.h5"):
        assert f(other) is None, other


def test_a_family_with_too_few_inputs_is_refused(tmp_path):
    path = tmp_path / "PACE_Lrc_aaNN.h5"
    write_family(path, 3, 0, 1, 2)  # 4 inputs: no band left for Lrc_1..n
    with pytest.raises(UserError, match="S_Lrc_aaNN network has 4 inputs besides its bands"):
        legacy.load(path, physical=True)


def ffbp_file(path, names_in, names_out, lo_in, hi_in, lo_out, hi_out, sizes_hidden=(6,), seed=0):
    """A C2RCC-style ffbp .net file with the given names and ranges (FORMATS.md layout)."""
    sizes = [len(names_in), *sizes_hidden, len(names_out)]
    ws, bs = random_net(sizes, seed, scale=2.0)
    lines = ["problem: generated", "saved at Mon Jan  1 00:00:00 2024", ""]
    lines.append(f"the net has {sizes[0]} inputs:")
    lines += [f"input {i + 1:2d} is {n} in [{lo_in[i]:f},{hi_in[i]:f}]" for i, n in enumerate(names_in)]
    lines.append(f"the net has {sizes[-1]} outputs:")
    lines += [
        f"output {i + 1:2d} is {n} in [{lo_out[i]:f},{hi_out[i]:f}]" for i, n in enumerate(names_out)
    ]
    lines += ["", "ranges repeated for easier input", "#", str(sizes[0])]
    lines += [f"{float(a)!r} {float(b)!r}" for a, b in zip(lo_in, hi_in)]
    lines += [str(sizes[-1])]
    lines += [f"{float(a)!r} {float(b)!r}" for a, b in zip(lo_out, hi_out)]
    lines += ["$", f"#planes={len(sizes)} " + " ".join(map(str, sizes))]
    for k, b in enumerate(bs, start=1):
        lines.append(f"bias {k} {sizes[k]}")
        lines += [repr(float(v)) for v in b]
    for k, w in enumerate(ws):
        lines.append(f"wgt {k} {sizes[k]} {sizes[k + 1]}")
        lines += [repr(float(w[to, fr])) for to in range(sizes[k + 1]) for fr in range(sizes[k])]
    path.write_text("\n".join(lines) + "\n")
    return ws, bs


def c2rcc_physical(ws, bs, rin, rout, log_in, log_out, x_phys):
    """C2RCC's computation: ln of the log_ inputs, ffbp math (sigmoid, [0, 1]), exp of the
    log_ outputs; vectorised float64 NumPy."""
    x = np.asarray(x_phys, np.float64).copy()
    x[:, log_in] = np.log(x[:, log_in])
    a = (x - rin[0]) / (rin[1] - rin[0])
    for w, b in zip(ws, bs):
        a = 1 / (1 + np.exp(-(a @ w.T + b)))
    y = a * (rout[1] - rout[0]) + rout[0]
    y[:, log_out] = np.exp(y[:, log_out])
    return y


def _c2rcc_net(tmp_path, seed=0):
    names_in = ["sun_zenith", "view_zenith", "temperature", "log_rw_443", "log_rw_560"]
    names_out = ["log_apig", "log_bpart", "x"]
    lo_in = np.array([0.0, 0.0, 0.0, -9.0, -8.5])
    hi_in = np.array([75.0, 60.0, 36.0, -1.0, -0.5])
    lo_out, hi_out = np.array([-7.0, -7.0, -1.0]), np.array([2.0, 5.0, 1.0])
    path = tmp_path / "olci_rw_iop_test_5x6x3.net"
    ws, bs = ffbp_file(path, names_in, names_out, lo_in, hi_in, lo_out, hi_out, seed=seed)
    return path, ws, bs, (lo_in, hi_in), (lo_out, hi_out)


def test_c2rcc_log_names_become_physical_with_ln_and_exp(tmp_path):
    path, ws, bs, rin, rout = _c2rcc_net(tmp_path)
    model = legacy.load(path, physical=True, dtype="float64", samples=500)
    assert mlnnkit.io_names(model) == (
        ["sun_zenith", "view_zenith", "temperature", "rw_443", "rw_560"],
        ["apig", "bpart", "x"],
    )
    assert model.get_layer("input_transform").transforms == ["identity"] * 3 + ["ln"] * 2
    assert model.get_layer("output_transform").transforms == ["exp", "exp", "identity"]
    # the scaling layers keep the network's own names and ranges
    assert model.get_layer("input_scaling").names[3] == "log_rw_443"
    assert model.get_layer("input_scaling").minimum[3] == -9.0
    rng = np.random.default_rng(3)
    xn = rin[0] + rng.uniform(0, 1, (200, 5)) * (rin[1] - rin[0])
    x = xn.copy()
    x[:, 3:] = np.exp(xn[:, 3:])
    got = np.asarray(model(x))
    want = c2rcc_physical(ws, bs, rin, rout, [3, 4], [0, 1], x)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_transforms_grammar_and_its_errors_name_the_option():
    p = _recipes.parse_transforms
    assert p("cos_deg:1-3,log10:4-5,ln:6", 7, "input") == (
        ["cos_deg"] * 3 + ["log10"] * 2 + ["ln", "identity"]
    )
    assert p("log10", 2, "input") == ["log10", "log10"]
    assert p("exp:all", 2, "output") == ["exp", "exp"]
    assert p(["ln", "identity"], 2, "input") == ["ln", "identity"]
    cases = [
        ("log10:4-112", 111, "--transforms: 'log10:4-112': the network has 111 inputs"),
        ("log10:0", 3, "numbered 1-3"),
        ("log10:3-1", 3, "runs backwards"),
        ("log10:1-2,ln:2", 3, "input 2 is given twice"),
        ("sqrt:1", 3, "unknown input transform 'sqrt'"),
        ("pow10:1", 3, "pow10 is an output transform"),
        ("log10:a", 3, "1-based index or range"),
        ("log10:1,,ln:2", 3, "an empty item"),
    ]
    for text, n, msg in cases:
        with pytest.raises(UserError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            p(text, n, "input", option="--transforms")
    with pytest.raises(UserError, match="--output-transforms: unknown output transform 'log10'"):
        p("log10", 2, "output", option="--output-transforms")
    with pytest.raises(UserError, match="names: 2 names for the 3 inputs"):
        _recipes.parse_names("a,b", 3, "input")
    with pytest.raises(UserError, match="'a' is given more than once"):
        _recipes.parse_names("a,b,a", 3, "input")


def test_transforms_and_names_override_a_recipe(tmp_path):
    path, *_ = _c2rcc_net(tmp_path)
    model = legacy.load(
        path,
        transforms="cos_deg:1-2",  # implies physical=True
        output_transforms="identity:1",
        names="solz,senz,t,rw_443,rw_560",
        samples=300,
    )
    assert model.get_layer("input_transform").transforms == ["cos_deg", "cos_deg", "identity", "ln", "ln"]
    assert model.get_layer("output_transform").transforms == ["identity", "exp", "identity"]
    ins, outs = mlnnkit.io_names(model)
    assert ins == ["solz", "senz", "t", "rw_443", "rw_560"]
    assert outs == ["log_apig", "bpart", "x"]  # identity on log_apig: the network's name


def test_unknown_family_is_refused_naming_families_and_options(cli, tmp_path):
    path = tmp_path / "mystery.h5"
    write_ocsmart(path, [5, 4, 2], seed=0)
    code, _out, err = cli("import", path, "--physical", "-o", tmp_path / "m.keras")
    assert code == 2 and "Traceback" not in err
    line = err.strip()
    assert line.startswith("error: ") and "\n" not in line
    for word in ("S_Lrc_aaNN", "S_aphNN", "C2RCC", "--transforms", "--output-transforms", "--names"):
        assert word in line, word
    assert not (tmp_path / "m.keras").exists()
    # the library names its parameters instead
    with pytest.raises(UserError, match="Pass transforms .* and output_transforms"):
        legacy.load(path, physical=True)
    # with transforms it imports; unlisted variables stay identity
    code, _out, err = cli(
        "import", path, "--transforms", "cos_deg:1", "--output-transforms", "pow10",
        "--names", "solz,a,b,c,d", "-o", tmp_path / "m.keras", "--samples", "300",
    )
    assert code == 0, err
    model = keras.saving.load_model(tmp_path / "m.keras")
    assert model.get_layer("input_transform").transforms == ["cos_deg"] + ["identity"] * 4
    assert mlnnkit.io_names(model)[0] == ["solz", "a", "b", "c", "d"]
    code, _out, err = cli("import", path, "--transforms", "log10:6", "-o", tmp_path / "x.keras")
    assert code == 2 and "--transforms: 'log10:6': the network has 5 inputs" in err


def test_inspect_names_the_family_and_physical_ranges(cli, tmp_path):
    path = tmp_path / "S2A_Lrc_rrsNN.h5"
    data = write_family(path, 3, 4, 0, 4)
    code, out, err = cli("inspect", path)
    assert code == 0, err
    assert "physical:    OC-SMART Lrc_rrsNN (file name S2A_Lrc_rrsNN.h5)" in out
    cmin = data["Norm_in"][0, 0]
    solz = next(l for l in out.splitlines() if " solz " in l)
    assert f"[0, {np.degrees(np.arccos(cmin)):.7g}] degrees" in solz
    assert "cos_deg -> cos_solz" in solz
    lrc = next(l for l in out.splitlines() if " Lrc_1 " in l)
    lo, hi = data["Norm_in"][3]
    assert f"[{10**lo:.7g}, {10**hi:.7g}]" in lrc and "log10   -> log10_Lrc_1" in lrc
    rrs = next(l for l in out.splitlines() if " Rrs_4 " in l)
    lo, hi = data["Norm_out"][3]
    assert f"[{10**lo:.7g}, {10**hi:.7g}]" in rrs
    code, out, err = cli("inspect", tmp_path / "S2A_Lrc_rrsNN.h5", "--names", "a,b")
    assert code == 2 and "--names: 2 names for the 7 inputs" in err
    other = tmp_path / "net.h5"
    write_ocsmart(other, [3, 2, 1])
    code, out, err = cli("inspect", other)
    assert code == 0 and "physical:    no known family" in out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_physical_import_export_round_trip_and_verify(cli, tmp_path, dtype):
    src = tmp_path / "OLCI_aphNN.h5"
    write_family(src, 0, 5, 0, 3)
    model_path = tmp_path / "phys.keras"
    code, out, err = cli(
        "import", src, "--physical", "--dtype", dtype, "-o", model_path, "--samples", "500"
    )
    assert code == 0, err
    assert "physical: OC-SMART aphNN" in out and "physical model" in out
    code, out, err = cli("verify", model_path, src, "--samples", "500")
    assert code == 0 and "passed" in out and "log10_aph_1" in out
    code, out, err = cli("export", model_path, "-o", tmp_path / "back.h5", "--samples", "500")
    assert code == 0, err
    import h5py

    with h5py.File(src) as a, h5py.File(tmp_path / "back.h5") as b:
        keys = []
        a.visit(keys.append)
        for k in keys:
            if isinstance(a[k], h5py.Dataset):
                x, y = a[k][()], b[k][()]
                if dtype == "float32" and x.dtype.kind == "f":
                    x, y = x.astype(np.float32), y.astype(np.float32)
                np.testing.assert_array_equal(x, y, err_msg=k)
    # the exported bare network, imported physical again, computes the same
    again = legacy.load(tmp_path / "back.h5", dtype=dtype, check=False,
                        transforms="log10", output_transforms="pow10")
    first = keras.saving.load_model(model_path)
    x = physical_inputs({"Norm_in": legacy.read(src).input_scaling.minimum[:, None]
                         + np.array([0.0, 1.0]) * np.ptp(np.stack(
                             [legacy.read(src).input_scaling.minimum,
                              legacy.read(src).input_scaling.maximum]), axis=0)[:, None]},
                        0, 50).astype(dtype)
    np.testing.assert_array_equal(np.asarray(first(x)), np.asarray(again(x)))


def test_verify_of_a_physical_model_catches_a_changed_network(tmp_path):
    src = tmp_path / "OLCI_aphNN.h5"
    write_family(src, 0, 4, 0, 2)
    model = legacy.load(src, physical=True, check=False)
    r = legacy.verify(model, src, samples=300)
    assert r.passed and r.physical and r.names == ["log10_aph_1", "log10_aph_2"]
    dense = model.get_layer("dense_1")
    k, b = dense.get_weights()
    k[0, 0] += 1e-3
    dense.set_weights([k, b])
    r = legacy.verify(model, src, samples=300)
    assert not r.passed and 1e-6 < r.max_rel_error < 1e-2


# --- predict with physical models: by name, NaN for what a transform cannot take ---------


def test_predict_table_by_physical_names_and_nan_rows(cli, tmp_path):
    import pandas as pd

    src = tmp_path / "S2A_Lrc_rrsNN.h5"
    data = write_family(src, 3, 4, 0, 4)
    code, out, err = cli("import", src, "--physical", "-o", tmp_path / "m.keras", "--samples", "300")
    assert code == 0, err
    x = physical_inputs(data, 3, 60)
    names = ["solz", "senz", "relaz", "Lrc_1", "Lrc_2", "Lrc_3", "Lrc_4"]
    x[5, 4] = 0.0  # zero under log10
    x[6, 6] = -1e-3  # negative reflectance
    x[7, 0] = np.nan  # missing angle
    x[8, 3] = np.inf
    bad = [5, 6, 7, 8]
    df = pd.DataFrame(x, columns=names)
    df["flag"] = 1  # another column, and the physical columns in another order
    df = df[["flag", *names[::-1]]]
    df.to_parquet(tmp_path / "scene.parquet")
    code, out, err = cli("predict", tmp_path / "m.keras", tmp_path / "scene.parquet",
                         "-o", tmp_path / "out.parquet")  # fmt: skip
    assert code == 0, err
    assert "(4 with NaN input -> NaN)" in out
    got = pd.read_parquet(tmp_path / "out.parquet")
    assert list(got.columns) == ["Rrs_1", "Rrs_2", "Rrs_3", "Rrs_4"]
    y = got.to_numpy(np.float64)
    assert np.isnan(y[bad]).all()
    good = np.setdiff1d(np.arange(60), bad)
    assert np.isfinite(y[good]).all()
    want = ocsmart_physical(data, 3, x[good].astype(np.float32).astype(np.float64))
    assert np.max(np.abs(y[good] / want - 1)) < 1e-5


def test_predict_scene_with_non_positive_pixels(cli, tmp_path):
    import xarray as xr

    path, ws, bs, rin, rout = _c2rcc_net(tmp_path)
    code, _out, err = cli("import", path, "--physical", "-o", tmp_path / "m.keras", "--samples", "300")
    assert code == 0, err
    rng = np.random.default_rng(5)
    h, w = 6, 7
    xn = rin[0] + rng.uniform(0, 1, (h * w, 5)) * (rin[1] - rin[0])
    x = xn.copy()
    x[:, 3:] = np.exp(xn[:, 3:])
    x[3, 4] = 0.0  # rw_560 = 0: no logarithm
    x[10, 3] = -0.01
    names = ["sun_zenith", "view_zenith", "temperature", "rw_443", "rw_560"]
    ds = xr.Dataset({n: (("y", "x"), x[:, i].reshape(h, w)) for i, n in enumerate(names)})
    ds.to_netcdf(tmp_path / "g.nc")
    code, _out, err = cli("predict", tmp_path / "m.keras", tmp_path / "g.nc", "-o", tmp_path / "o.nc")
    assert code == 0, err
    with xr.open_dataset(tmp_path / "o.nc") as o:
        y = np.stack([o[n].values.reshape(-1) for n in ("apig", "bpart", "x")], axis=1)
    assert np.isnan(y[[3, 10]]).all()
    keep = np.setdiff1d(np.arange(h * w), [3, 10])
    want = c2rcc_physical(ws, bs, rin, rout, [3, 4], [0, 1], x[keep].astype(np.float32))
    np.testing.assert_allclose(y[keep], want, rtol=2e-5, atol=1e-6)


# --- the real fixtures: physical import == the processor's own computation ----------------


def test_fixtures_physical_match_the_processors_to_1e_5(cli, tmp_path, fixtures_dir):
    import h5py

    from mlnnkit.legacy import ffbp

    rng = np.random.default_rng(11)
    pace = fixtures_dir / "ocsmart" / "PACE_Lrc_aaNN.H5"
    code, _out, err = cli("import", pace, "--physical", "-o", tmp_path / "pace.keras",
                         "--samples", "2000")  # fmt: skip
    assert code == 0, err
    model = keras.saving.load_model(tmp_path / "pace.keras")
    ins, outs = mlnnkit.io_names(model)
    assert ins[:4] == ["solz", "senz", "relaz", "Lrc_1"] and ins[-1] == "rh" and len(ins) == 111
    assert outs == [f"Lrc_{k}" for k in range(1, 108)]
    with h5py.File(pace) as f:
        data = {k: f[k][()] for k in ("Layers", "Norm_in", "Norm_out")}
        for k in range(1, 5):
            data[f"Weights/Layer{k}"] = f[f"Weights/Layer{k}"][()]
            data[f"Bias/Layer{k}"] = f[f"Bias/Layer{k}"][()]
    x = physical_inputs(data, 3, 2000).astype("float32")
    got = mlnnkit.predict_array(model, x)
    want = ocsmart_physical(data, 3, x.astype(np.float64))
    assert np.max(np.abs(got / want - 1)) < 1e-5

    for net in sorted((fixtures_dir / "c2rcc").glob("*.net")):
        spec = ffbp.read(net)
        code, _out, err = cli("import", net, "--physical", "-o", tmp_path / "c.keras",
                             "--samples", "2000")  # fmt: skip
        assert code == 0, err
        model = keras.saving.load_model(tmp_path / "c.keras")
        ins, outs = mlnnkit.io_names(model)
        assert all(not n.startswith("log_") for n in ins + outs)
        lo, hi = spec.input_scaling.minimum, spec.input_scaling.maximum
        xn = lo + rng.uniform(0, 1, (2000, len(lo))) * (hi - lo)
        log_in = [j for j, n in enumerate(spec.input_names) if n.startswith("log_")]
        log_out = [j for j, n in enumerate(spec.output_names) if n.startswith("log_")]
        x = xn.copy()
        x[:, log_in] = np.exp(xn[:, log_in])
        dt = model.inputs[0].dtype
        x = x.astype(dt)
        rin = (lo, hi)
        rout = (spec.output_scaling.minimum, spec.output_scaling.maximum)
        want = c2rcc_physical(spec.weights, spec.biases, rin, rout, log_in, log_out, x)
        got = mlnnkit.predict_array(model, x)
        assert np.max(np.abs(got / want - 1)) < 1e-5, net.name


# --- fine-tuning on physical matchups --------------------------------------------------


def test_ocean_colour_metrics_by_hand():
    from mlnnkit.finetune._report import ocean_colour_metrics, positive_outputs

    t = np.array([1.0, 2.0, 4.0, 10.0])
    p = np.array([2.0, 2.0, 2.0, 1.0])
    r = np.log10(p / t)
    m = ocean_colour_metrics(t, p)
    assert m["mult_bias"] == pytest.approx(10 ** r.mean())
    assert m["mult_error"] == pytest.approx(10 ** np.abs(r).mean())
    assert m["mape"] == pytest.approx(100 * np.mean(np.abs(p - t) / t))
    assert m["mdsa"] == pytest.approx(100 * (10 ** np.median(np.abs(r)) - 1))
    assert m["sspb"] == pytest.approx(-100 * (10 ** abs(np.median(r)) - 1))
    m = ocean_colour_metrics(np.array([1.0, -1.0]), np.array([1.0, 1.0]))
    assert m["n_ratio"] == 1 and m["n_nonpositive"] == 1 and m["mdsa"] == 0.0
    assert positive_outputs(np.array([[1.0, -1.0, 0.5], [2.0, 1.0, 0.1]])) == [0, 2]


def test_finetune_physical_matchups_lowers_mdsa_and_keeps_fixed_layers(cli, tmp_path):
    import json

    import pandas as pd

    src = tmp_path / "OLCI_aphNN.h5"
    data = write_family(src, 0, 5, 0, 2, hidden=(12,))
    x = physical_inputs(data, 0, 700, seed=4)
    y = ocsmart_physical(data, 0, x)
    rng = np.random.default_rng(2)
    y_shift = 10 ** (np.log10(y) + np.log10(1.5) + rng.normal(0, 0.01, y.shape))
    df = pd.DataFrame(np.concatenate([x, y_shift], 1),
                      columns=[f"Rrs_{k}" for k in range(1, 6)] + ["aph_1", "aph_2"])
    df.loc[3, "Rrs_2"] = 0.0  # a row log10 cannot take
    df.to_csv(tmp_path / "m.csv", index=False)
    code, out, err = cli("finetune", src, "--physical", "--data", tmp_path / "m.csv",
                         "-o", tmp_path / "run")  # fmt: skip
    assert code == 2 and "cannot take" in err and "--drop-nonfinite" in err
    code, out, err = cli("finetune", src, "--physical", "--data", tmp_path / "m.csv",
                         "-o", tmp_path / "run", "--drop-nonfinite", "--lr", "1e-3",
                         "--compare-scratch", "--epochs", "150")  # fmt: skip
    assert code == 0, err
    assert "MdSA %" in out and "held-out MdSA" in out
    r = json.loads((tmp_path / "run" / "report.json").read_text())
    assert r["dropped_untransformable_rows"] == 1
    assert r["inputs"] == [f"Rrs_{k}" for k in range(1, 6)] and r["targets"] == ["aph_1", "aph_2"]
    assert "network's own space" in r["finetuning"]["loss"]
    assert r["physical"]["output_transforms"] == ["pow10", "pow10"]
    assert r["original"]["mdsa"] == pytest.approx(50.0, abs=3)  # the 1.5x shift
    assert r["finetuned"]["mdsa"] < r["original"]["mdsa"] / 2
    assert r["finetuned"]["mdsa"] < r["scratch"]["mdsa"]
    assert set(r["per_output"]["aph_1"]["finetuned"]) >= {"mdsa", "mult_bias", "mape", "rmse"}
    tuned = keras.saving.load_model(tmp_path / "run" / "model.keras")
    orig = legacy.load(src, physical=True, check=False)
    for name in ("input_transform", "input_scaling", "output_scaling", "output_transform"):
        assert tuned.get_layer(name).get_config() == orig.get_layer(name).get_config()
    assert (tmp_path / "run" / "model.h5").exists()  # the bare network, exported


@pytest.mark.parametrize(
    "layer_cls,kinds",
    [
        (InputTransform, ["cos_deg"] * 2 + ["log10"] * 10 + ["identity"]),
        (OutputTransform, ["exp"] + ["pow10"] * 6 + ["identity"]),
    ],
)
def test_mostly_one_transform_matches_numpy_with_invalid_values(layer_cls, kinds):
    """One map on 3/4 of the columns or more (PACE: 3 cos, 108 log10) runs over every
    column and the others are written over theirs: the same values, NaN where due."""
    x = _columns(kinds)[:200]
    x[0, 0] = np.nan  # a minority column
    x[1, 5] = np.inf  # a majority column
    x[2, 4] = 0.0 if layer_cls is InputTransform else -np.inf
    x[3, -1] = -np.inf
    y = np.asarray(_model(layer_cls, kinds, "float32")(x.astype("float32")), np.float64)
    want = np.stack([transform_numpy(k, x[:, j]) for j, k in enumerate(kinds)], axis=1)
    if layer_cls is OutputTransform:
        want[~np.isfinite(x)] = np.nan  # NaN in gives NaN out; so does +-Inf
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    ok = np.isfinite(want)
    scale = np.maximum(np.abs(np.where(ok, want, 0)).max(axis=0), 1.0)
    assert (np.abs(np.where(ok, y - want, 0)) / scale).max() < 2e-5
