"""ONNX export (#14): every written file loads in onnxruntime and computes what the model
and the float64 reference of its legacy file compute; float64 models stay float64; the
interface and metadata a MATLAB/Java user reads; nothing left behind on failure; the
refusal without the ``onnx`` extra.

The checks here run onnxruntime on the written file themselves, on their own inputs, with
the legacy file read again from disk: they do not trust the numbers the exporter prints.
Tests needing the extra are skipped (with the reason) only in an install without it; the
refusal test runs everywhere.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from _legacy_nets import ocsmart_forward, write_ocsmart

from mlnnkit import legacy
from mlnnkit.export import onnx_available
from mlnnkit.legacy import reference

REPO = Path(__file__).resolve().parents[1]
needs_onnx = pytest.mark.skipif(
    not onnx_available(), reason='the onnx extra is not installed: pip install "mlnnkit[onnx]"'
)

FIXTURES = {
    "PACE_Lrc_aaNN": "ocsmart/PACE_Lrc_aaNN.H5",
    "olci_rtosa_aann": "c2rcc/olci_rtosa_aann_31x7x31_1159.4.net",
    "olci_rw_iop": "c2rcc/olci_rw_iop_37x37x37_596495.4.net",
    "msi_rw_rwnorm": "c2rcc/msi_complex_20200321_rw_rwnorm_27x7x27_28.0.net",
    "meris_rtosa_rw": (
        "c2rcc/meris_c2x_nn4snap_meris_hitsm_20151128_rtosa_rw_17x27x27x17_677356.6.net"
    ),
}


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(path, x):
    s = _session(path)
    (inp,) = s.get_inputs()
    dtype = np.float64 if inp.type == "tensor(double)" else np.float32
    return s.run(None, {inp.name: np.asarray(x, dtype)})


def _rel_error_vs_file(onnx_path, legacy_path, n=5000, seed=11):
    """Max |onnx - float64 reference of the file| / output range, on our own inputs."""
    spec = legacy.read(legacy_path)
    lo, hi = spec.input_scaling.minimum, spec.input_scaling.maximum
    x = reference.sample_inputs(lo, hi, n, seed=seed)
    s = _session(onnx_path)
    x = x.astype(np.float64 if s.get_inputs()[0].type == "tensor(double)" else np.float32)
    (y,) = s.run(None, {"inputs": x})
    ref = reference.forward(spec, x.astype(np.float64))
    return float(np.max(np.abs(y - ref) / spec.output_span())), spec, s


@needs_onnx
@pytest.mark.parametrize("name", list(FIXTURES))
def test_fixture_exports_and_matches_its_legacy_file(cli, fixtures_dir, tmp_path, name):
    src = fixtures_dir / FIXTURES[name]
    out = tmp_path / f"{name}.onnx"
    code, stdout, err = cli("export", src, "-o", out, "--samples", "3000")
    assert code == 0, err
    assert out.is_file() and [p.name for p in tmp_path.iterdir()] == [out.name]
    # the figures as verify prints them: two checks, the file's math in a full table
    assert stdout.count("verify: 3,000 samples over the input ranges (edges included)") == 2
    assert "vs the float64 NumPy reference of the file's" in stdout
    printed = [float(v) for v in re.findall(r"passed: max error (\S+) of range", stdout)]
    assert len(printed) == 2
    rel, spec, session = _rel_error_vs_file(out, src)
    (inp,), outs = session.get_inputs(), session.get_outputs()
    assert inp.name == "inputs" and inp.shape[1] == spec.n_inputs
    assert isinstance(inp.shape[0], str)  # dynamic row count
    assert [o.name for o in outs] == ["outputs"] and outs[0].shape[1] == spec.n_outputs
    if name == "meris_rtosa_rw":
        # float32 arithmetic is not precise enough for MERIS: imported and exported in
        # float64, matching the file's float64 math to 1e-12 of each output's range
        assert inp.type == "tensor(double)" and outs[0].type == "tensor(double)"
        assert "float64" in stdout and rel <= 1e-12, rel
    else:
        assert inp.type == "tensor(float)"
        assert rel <= 1e-5, rel
    assert rel > 0  # a real comparison, not an identity


@needs_onnx
def test_float64_model_exported_in_double_precision(tmp_path):
    """Keras's exporter would write a file onnxruntime refuses to load; ours is float64."""
    from mlnnkit.export import to_onnx

    data = write_ocsmart(tmp_path / "net.h5", [5, 9, 7, 3], seed=3)
    model = legacy.load(tmp_path / "net.h5", dtype="float64")
    result = to_onnx(model, tmp_path / "net.onnx", samples=500)
    assert result.dtype == "float64" and "enable_double_precision" in result.exporter
    assert max(c.max_rel_error for c in result.checks) <= 1e-12
    x = np.random.default_rng(5).uniform(data["Norm_in"][:, 0], data["Norm_in"][:, 1], (40, 5))
    (y,) = _run(tmp_path / "net.onnx", x)
    assert y.dtype == np.float64
    want = ocsmart_forward(data, x)  # FORMATS.md's math, written out again
    span = data["Norm_out"][:, 1] - data["Norm_out"][:, 0]
    assert np.max(np.abs(y - want) / span) <= 1e-12


@needs_onnx
def test_metadata_names_ranges_provenance(cli, fixtures_dir, tmp_path):
    import onnx

    import mlnnkit
    from mlnnkit.export import read_onnx_metadata

    src = fixtures_dir / FIXTURES["olci_rw_iop"]
    code, _, err = cli("import", src, "-o", tmp_path / "iop.keras", "--samples", "500")
    assert code == 0, err
    code, _, err = cli("export", tmp_path / "iop.keras", "-o", tmp_path / "iop.onnx",
                       "--samples", "500")  # fmt: skip
    assert code == 0, err
    spec = legacy.read(src)
    meta = read_onnx_metadata(tmp_path / "iop.onnx")
    assert meta["input_names"] == spec.input_names and meta["output_names"] == spec.output_names
    np.testing.assert_array_equal(meta["input_min"], spec.input_scaling.minimum)
    np.testing.assert_array_equal(meta["input_max"], spec.input_scaling.maximum)
    np.testing.assert_array_equal(meta["output_min"], spec.output_scaling.minimum)
    np.testing.assert_array_equal(meta["output_max"], spec.output_scaling.maximum)
    assert meta["source_file"] == "iop.keras" and meta["source_format"] == "ffbp"
    assert meta["mlnnkit_version"] == mlnnkit.__version__ and meta["dtype"] == "float32"
    assert meta["input_name"] == "inputs" and meta["input_shape"] == ["batch", 17]
    assert "input_transforms" not in meta  # a bare network: no transforms
    # every value is a JSON string any reader can decode (MATLAB jsondecode, Java, ...)
    proto = onnx.load(str(tmp_path / "iop.onnx"))
    for p in proto.metadata_props:
        if p.key not in ("exporter", "ranges", "model_name", "source_file", "source_format",
                         "dtype", "mlnnkit_version", "input_name"):  # fmt: skip
            json.loads(p.value)
    assert proto.producer_name == "mlnnkit"


@needs_onnx
def test_generic_model_multi_output_never_called(tmp_path):
    """Any Keras-ops model: no scaling layers, two named outputs, never called before."""
    import mlnnkit  # noqa: F401
    from mlnnkit.export import to_onnx

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), name="x")
    h = keras.layers.Dense(8, activation="relu")(inp)
    h = keras.layers.Dense(8, activation="softplus")(h)
    a = keras.layers.Dense(2, name="rrs")(h)
    b = keras.layers.Dense(1, activation="sigmoid", name="score")(h)
    model = keras.Model(inp, [a, b])
    result = to_onnx(model, tmp_path / "m.onnx", samples=300)
    assert result.output_names == ["rrs", "score"] and result.dtype == "float32"
    assert len(result.checks) == 1  # not a legacy network: the model is the yardstick
    x = np.random.default_rng(1).uniform(-3, 3, (64, 4)).astype(np.float32)
    ya, yb = _run(tmp_path / "m.onnx", x)
    ka, kb = (np.asarray(v) for v in model(x))
    np.testing.assert_allclose(ya, ka, atol=1e-5)
    np.testing.assert_allclose(yb, kb, atol=1e-6)


@needs_onnx
def test_failed_check_leaves_nothing_and_keeps_old_file(cli, tmp_path):
    data = write_ocsmart(tmp_path / "net.h5", [4, 6, 2], seed=1)
    del data
    out = tmp_path / "net.onnx"
    # float32 arithmetic cannot match the float64 reference to 1e-15 of the range
    code, stdout, err = cli("export", tmp_path / "net.h5", "-o", out, "--tolerance", "1e-15",
                            "--samples", "200")  # fmt: skip
    assert code == 1, (stdout, err)
    assert "nothing written" in err and "FAIL" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.h5"]
    out.write_bytes(b"old")
    code, _, _ = cli("export", tmp_path / "net.h5", "-o", out, "--tolerance", "1e-15",
                     "--samples", "200")  # fmt: skip
    assert code == 1 and out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.h5", "net.onnx"]


@needs_onnx
def test_format_option_and_rawh5_options(cli, tmp_path):
    write_ocsmart(tmp_path / "net.h5", [3, 4, 2], seed=2)
    code, _out, err = cli("export", tmp_path / "net.h5", "-o", tmp_path / "net.bin",
                         "--format", "onnx", "--samples", "100")  # fmt: skip
    assert code == 0, err
    assert _session(tmp_path / "net.bin").get_inputs()[0].name == "inputs"
    code, _, err = cli("export", tmp_path / "net.h5", "-o", tmp_path / "x.onnx",
                       "--weights", "W{i}")  # fmt: skip
    assert code == 2 and "--weights apply to --format rawh5 only" in err
    assert not (tmp_path / "x.onnx").exists()


@needs_onnx
def test_to_onnx_docstring_example_runs():
    from mlnnkit.export import _onnx

    finder = doctest.DocTestFinder()
    (test,) = [t for t in finder.find(_onnx.to_onnx, "to_onnx", globs={}) if t.examples]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 8


_BLOCK = """
import sys
sys.modules[{name!r}] = None  # as if the package were not installed
from mlnnkit.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("missing", ["onnxruntime", "jax2onnx"])
def test_refusal_without_the_extra(tmp_path, missing):
    """A real subprocess in which the module cannot be imported (not a mock)."""
    write_ocsmart(tmp_path / "net.h5", [3, 4, 2], seed=0)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "KERAS_BACKEND": "jax"}
    for args in (["-o", "net.onnx"], ["-o", "net.bin", "--format", "onnx"]):
        p = subprocess.run(
            [sys.executable, "-c", _BLOCK.format(name=missing), "export", "net.h5", *args],
            cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert p.returncode == 2, (p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
        assert missing in lines[0] and 'pip install "mlnnkit[onnx]"' in lines[0]
        assert "Traceback" not in p.stderr
    assert sorted(q.name for q in tmp_path.iterdir()) == ["net.h5"]


@needs_onnx
def test_keras_ops_transforms_become_onnx_ops_nan_kept(tmp_path):
    """The ops the physical-units layers are made of (log10/ln under where, cos of degrees,
    10**x, exp) export to ONNX ops, and a non-positive value under a log gives NaN in the
    file as in the model (never -inf, never an error)."""
    import onnx

    import mlnnkit  # noqa: F401
    from mlnnkit.export import to_onnx

    class Physical(keras.layers.Layer):
        def call(self, x):
            ops = keras.ops
            pos = x[:, 1:] > 0
            logs = ops.where(pos, ops.log(ops.where(pos, x[:, 1:], 1.0)) / np.log(10.0), np.nan)
            return ops.concatenate([ops.cos(x[:, :1] * (np.pi / 180.0)), logs], axis=1)

    class Back(keras.layers.Layer):
        def call(self, y):
            return keras.ops.concatenate(
                # 10**y as exp(y ln 10): keras.ops.power(10.0, y) does not trace with a
                # symbolic row count under jax2onnx (Keras 3.15: '_DimExpr' object cannot
                # be interpreted as an integer)
                [keras.ops.exp(y[:, :1] * np.log(10.0)), keras.ops.exp(y[:, 1:])], axis=1
            )

    keras.utils.set_random_seed(1)
    inp = keras.Input((3,), name="inputs")
    h = keras.layers.Dense(6, activation="tanh")(Physical()(inp))
    model = keras.Model(inp, Back()(keras.layers.Dense(2)(h)))
    result = to_onnx(model, tmp_path / "phys.onnx", samples=200)
    assert result.passed
    kinds = {n.op_type for n in onnx.load(str(tmp_path / "phys.onnx")).graph.node}
    assert {"Log", "Cos", "Where", "Exp"} <= kinds
    x = np.array([[30.0, 0.5, 2.0], [60.0, -1.0, 3.0], [0.0, 0.0, 1.0], [45.0, 1e-3, 1e3]],
                 np.float32)  # fmt: skip
    (y,) = _run(tmp_path / "phys.onnx", x)
    want = np.asarray(model(x))
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()  # log of -1 and of 0: NaN rows
    np.testing.assert_allclose(y[[0, 3]], want[[0, 3]], rtol=1e-5)


@needs_onnx
def test_physical_model_transforms_in_the_graph(cli, fixtures_dir, tmp_path):
    """`import --physical` then export: ln/exp are ONNX ops, physical values in and out,
    matching the file's float64 math plus the transforms (checked here independently)."""
    import onnx

    from mlnnkit.export import read_onnx_metadata
    from mlnnkit.layers import transform_numpy

    src = fixtures_dir / FIXTURES["olci_rw_iop"]
    code, _, err = cli("import", src, "--physical", "-o", tmp_path / "p.keras", "--samples", "500")
    assert code == 0, err
    code, out, err = cli("export", tmp_path / "p.keras", "-o", tmp_path / "p.onnx",
                         "--samples", "1000")  # fmt: skip
    assert code == 0, err
    assert "vs the float64 NumPy reference of the file's ffbp math" in out
    kinds = {n.op_type for n in onnx.load(str(tmp_path / "p.onnx")).graph.node}
    assert {"Log", "Exp", "Where"} <= kinds
    meta = read_onnx_metadata(tmp_path / "p.onnx")
    assert meta["input_transforms"][-1] == "ln" and meta["output_transforms"] == ["exp"] * 5
    assert meta["output_names"][0] == "apig" and meta["output_network_names"][0] == "log_apig"
    spec = legacy.read(src)
    xn = reference.sample_inputs(spec.input_scaling.minimum, spec.input_scaling.maximum, 3000,
                                 seed=4)  # fmt: skip
    tr = meta["input_transforms"]
    x = np.stack([transform_numpy(t, xn[:, j], inverse=True) for j, t in enumerate(tr)], 1)
    (y,) = _run(tmp_path / "p.onnx", x)
    ref = np.exp(reference.forward(spec, xn))  # the file's math, then exp
    rel = np.max(np.abs(np.log(y) - np.log(ref)) / spec.output_span())
    assert 0 < rel <= 1e-5, rel
    # a non-positive reflectance: NaN outputs for that row, not an error
    bad = x[:2].copy()
    bad[1, -1] = 0.0
    (yb,) = _run(tmp_path / "p.onnx", bad)
    assert np.isfinite(yb[0]).all() and np.isnan(yb[1]).all()


@needs_onnx
def test_chain_with_scope_and_flags(cli, fixtures_dir, tmp_path):
    """A C2RCC-style chain (rtosa AANN scope + rw->IOP): outputs, scope_error and
    quality_flags as named outputs, equal to `predict_array(..., flags=True)`."""
    import mlnnkit
    from mlnnkit.export import read_onnx_metadata
    from mlnnkit.models import load_model

    for name, f in (("aann", "olci_rtosa_aann"), ("iop", "olci_rw_iop")):
        code, _, err = cli("import", fixtures_dir / FIXTURES[f], "--physical",
                           "-o", tmp_path / f"{name}.keras", "--samples", "300")  # fmt: skip
        assert code == 0, err
    ch = mlnnkit.retrieval.chain([tmp_path / "iop.keras"], scope=tmp_path / "aann.keras",
                                 scope_metric="sum_abs")  # fmt: skip
    ch.save(tmp_path / "chain.keras")
    code, out, err = cli("export", tmp_path / "chain.keras", "-o", tmp_path / "chain.onnx",
                         "--flags", "--samples", "1000")  # fmt: skip
    assert code == 0, err
    assert "vs the Keras model's quality flags" in out
    meta = read_onnx_metadata(tmp_path / "chain.onnx")
    assert meta["outputs"] == ["outputs", "scope_error", "quality_flags"]
    assert meta["output_names"] == ["apig", "adet", "agelb", "bpart", "bwit"]
    assert meta["scope"]["metric"] == "sum_abs" and len(meta["chain_steps"]) == 2
    assert meta["quality_flags"]["flag_meanings"][3] == "out_of_scope"
    model = load_model(tmp_path / "chain.keras", compile=False)
    lo, hi = np.array(meta["chain_inputs_range"]).T
    x = reference.sample_inputs(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), 2000, seed=9,
                                edge_fraction=0.0).astype(np.float32)  # fmt: skip
    x[3, 10] = np.nan
    y, s, f = _run(tmp_path / "chain.onnx", x)
    yk, fk = mlnnkit.predict_array(model, x, flags=True)
    assert y.shape == (2000, 5) and s.shape == (2000,) and f.dtype == np.uint8
    assert np.isnan(y[3]).all() and f[3] & 16
    ok = np.isfinite(yk).all(axis=1)
    np.testing.assert_allclose(y[ok], yk[ok, :5], rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(s[ok], yk[ok, 5], rtol=2e-4, atol=1e-7)
    assert np.mean(f == fk) >= 0.999 and len(set(f.tolist())) > 2  # real, varied flags


def test_flags_refused_for_legacy_export(cli, tmp_path):
    write_ocsmart(tmp_path / "net.h5", [3, 4, 2], seed=0)
    code, _, err = cli("import", tmp_path / "net.h5", "-o", tmp_path / "m.keras", "--samples", "50")
    assert code == 0, err
    code, _, err = cli("export", tmp_path / "m.keras", "-o", tmp_path / "back.h5", "--flags")
    assert code == 2 and "--flags applies to ONNX export" in err
