"""Chains of physical-unit networks (#12): wiring by name, errors, save/reload, scope
tests against OC-SMART's and C2RCC's own arithmetic, the refusal to fine-tune a chain."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest

import mlnnkit
from mlnnkit.layers import InputScaling, InputTransform, OutputScaling, OutputTransform
from mlnnkit.retrieval import chain, chain_info, is_chain


def phys_net(ins, outs, name, *, in_tf="log10", out_tf="pow10", lo=-3.0, hi=0.0, seed=0):
    """A small physical network: transform, min-max to [-1, 1], tanh, linear, back."""
    rng = np.random.default_rng(seed)
    x = keras.Input((len(ins),), name="inputs")
    h = InputTransform([in_tf] * len(ins), names=ins, name="input_transform")(x)
    h = InputScaling([lo] * len(ins), [hi] * len(ins), names=[f"n_{n}" for n in ins],
                     name="input_scaling")(h)  # fmt: skip
    d1 = keras.layers.Dense(6, activation="tanh", name="dense_1")
    d2 = keras.layers.Dense(len(outs), name="dense_2")
    h = d2(d1(h))
    h = OutputScaling([lo] * len(outs), [hi] * len(outs), names=[f"n_{n}" for n in outs],
                      name="output_scaling")(h)  # fmt: skip
    y = OutputTransform([out_tf] * len(outs), names=outs, name="output_transform")(h)
    model = keras.Model(x, y, name=name)
    d1.set_weights([rng.normal(0, 0.7, (len(ins), 6)), rng.normal(0, 0.1, 6)])
    d2.set_weights([rng.normal(0, 0.4, (6, len(outs))), rng.normal(0, 0.1, len(outs))])
    return model


def scene(n, k, seed=1):
    return (10 ** np.random.default_rng(seed).uniform(-3, 0, (n, k))).astype(np.float32)


def test_chain_wires_steps_by_name():
    rrs = phys_net(["Lrc_1", "Lrc_2", "Lrc_3"], ["Rrs_1", "Rrs_2"], "rrs", seed=1)
    aph = phys_net(["Rrs_2", "Rrs_1", "Lrc_3"], ["aph_1"], "aph", seed=2)  # mixed sources
    model = chain([rrs, aph])
    info = chain_info(model)
    assert info["input_names"] == ["Lrc_1", "Lrc_2", "Lrc_3"]
    assert info["output_names"] == ["Rrs_1", "Rrs_2", "aph_1"]
    assert [s["name"] for s in info["steps"]] == ["rrs", "aph"]
    assert mlnnkit.io_names(model) == (info["input_names"], info["output_names"])
    assert len(model.inputs) == len(model.outputs) == 1
    x = scene(500, 3)
    y = mlnnkit.predict_array(model, x)
    r = mlnnkit.predict_array(rrs, x)
    a = mlnnkit.predict_array(aph, np.c_[r[:, 1], r[:, 0], x[:, 2]])
    np.testing.assert_allclose(y, np.c_[r, a], rtol=1e-5)


def test_chain_inputs_are_the_names_no_step_produces_in_order_of_use():
    a = phys_net(["p", "q"], ["r"], "a")
    b = phys_net(["s", "r", "p"], ["t"], "b")
    info = chain_info(chain([a, b]))
    assert info["input_names"] == ["p", "q", "s"]
    assert info["output_names"] == ["r", "t"]


def test_name_produced_twice_names_both_steps():
    a = phys_net(["p"], ["r"], "first")
    b = phys_net(["p"], ["r"], "second")
    with pytest.raises(
        mlnnkit.UserError, match=r"'r' is produced by both model 'first' and model 'second'"
    ):
        chain([a, b])


def test_step_producing_an_earlier_chain_input_is_refused():
    a = phys_net(["r"], ["s"], "uses_r")
    b = phys_net(["p"], ["r"], "makes_r")
    with pytest.raises(
        mlnnkit.UserError, match="takes as an input of the chain; put model 'makes_r' before"
    ):
        chain([a, b])


def test_step_without_names_is_refused():
    anon = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)], name="anon")
    with pytest.raises(mlnnkit.UserError, match="does not name its variables.*--physical"):
        chain([anon])


def test_missing_chain_input_in_a_file_is_named(tmp_path, cli):
    import pandas as pd

    a = phys_net(["p", "q"], ["r"], "a")
    b = phys_net(["r", "s"], ["t"], "b")
    path = tmp_path / "chain.keras"
    chain([a, b]).save(path)
    pd.DataFrame({"p": [0.1], "q": [0.2], "x": [0.3], "y": [0.4]}).to_csv(
        tmp_path / "in.csv", index=False
    )
    code, _, err = cli("predict", path, tmp_path / "in.csv", "-o", tmp_path / "out.csv")
    assert code == 2
    assert "s" in err and "not in the file" in err


def test_chain_saved_and_reloaded(tmp_path):
    rrs = phys_net(["L1", "L2"], ["R1", "R2"], "rrs", seed=3)
    iop = phys_net(["R1", "R2"], ["a1"], "iop", seed=4)
    aann = phys_net(["L1", "L2"], ["L1", "L2"], "aann", seed=5)
    model = chain([rrs, iop], scope=aann, scope_metric="sum_abs", scope_threshold=0.05)
    path = tmp_path / "chain.keras"
    model.save(path)
    code = (
        "import keras, mlnnkit, numpy as np\n"
        f"m = keras.saving.load_model({str(path)!r})\n"
        "print(mlnnkit.io_names(m)[1]); x = np.full((3, 2), 0.1, 'float32')\n"
        "np.save(" + repr(str(tmp_path / "y.npy")) + ", mlnnkit.predict_array(m, x))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "['R1', 'R2', 'a1', 'scope_error']" in out.stdout
    reloaded = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(
        reloaded, mlnnkit.predict_array(model, np.full((3, 2), 0.1, "float32"))
    )
    again = keras.saving.load_model(path)
    assert is_chain(again) and chain_info(again) == chain_info(model)


def test_scope_metrics_and_out_of_scope_bit():
    aann = phys_net(["L1", "L2", "L3"], ["L1", "L2", "L3"], "aann", seed=6)
    step = phys_net(["L1", "L2"], ["R1"], "step", seed=7)
    x = scene(400, 3, seed=8)
    rec = mlnnkit.predict_array(aann, x).astype(np.float64)
    for metric, variables, want in (
        ("mean_rel", None, np.mean(np.abs(rec / x - 1), axis=1)),
        ("sum_abs", ["L2", "L3"], np.sum(np.abs(rec[:, 1:] - x[:, 1:]), axis=1)),
        ("sum_abs", "L[23]", np.sum(np.abs(rec[:, 1:] - x[:, 1:]), axis=1)),
    ):
        threshold = float(np.median(want))
        model = chain([step], scope=aann, scope_metric=metric, scope_variables=variables,
                      scope_threshold=threshold)  # fmt: skip
        y, flags = mlnnkit.predict_array(model, x, flags=True)
        np.testing.assert_allclose(y[:, -1], want, rtol=1e-5, atol=1e-6)
        oos = (flags & 8) > 0
        assert oos.tolist() == (y[:, -1] > threshold).tolist()
        assert 0.3 < oos.mean() < 0.7


def test_scope_defaults_and_errors():
    aann = phys_net(["L1", "L2"], ["L1", "L2"], "aann")
    step = phys_net(["L1"], ["R1"], "step")
    assert chain_info(chain([step], scope=aann))["scope"]["threshold"] == 0.07
    assert (
        chain_info(chain([step], scope=aann, scope_metric="sum_abs"))["scope"]["threshold"] == 0.01
    )
    with pytest.raises(mlnnkit.UserError, match="scope_metric"):
        chain([step], scope=aann, scope_metric="rmse")
    with pytest.raises(mlnnkit.UserError, match="'X\\*' matches none"):
        chain([step], scope=aann, scope_variables=["X*"])
    other = phys_net(["L1"], ["Z"], "not_aann")
    with pytest.raises(mlnnkit.UserError, match="'Z' is not one of its inputs"):
        chain([step], scope=other)
    with pytest.raises(mlnnkit.UserError, match="need a scope"):
        chain([step], scope_threshold=0.1)


def test_invalid_input_of_one_step_makes_the_whole_row_nan():
    aann = phys_net(["L1", "h"], ["L1", "h"], "aann")
    step = phys_net(["L1"], ["R1"], "step")
    model = chain([step], scope=aann)
    x = np.array([[0.1, 0.2], [0.1, 0.0], [0.1, -1.0]], np.float32)  # h <= 0 under a log
    y, flags = mlnnkit.predict_array(model, x, flags=True)
    assert np.isfinite(y[0]).all() and np.isnan(y[1:]).all()
    assert (flags[1:] & 16).all() and not flags[0] & 16


def test_finetuning_a_chain_is_refused(tmp_path, cli):
    import pandas as pd

    from mlnnkit.finetune import finetune

    model = chain([phys_net(["p"], ["r"], "a")])
    with pytest.raises(mlnnkit.UserError, match="fine-tune the step.*chain again"):
        finetune(model, np.ones((10, 1), np.float32), np.ones((10, 1), np.float32))
    model.save(tmp_path / "c.keras")
    pd.DataFrame({"p": np.linspace(0.1, 0.9, 20), "r": np.linspace(0.1, 0.9, 20)}).to_csv(
        tmp_path / "m.csv", index=False
    )
    code, _, err = cli(
        "finetune", tmp_path / "c.keras", "-d", tmp_path / "m.csv", "-o", tmp_path / "ft"
    )
    assert code == 2
    assert err.startswith("error: ") and "is a chain of 1 networks (a)" in err
    assert "mlnnkit chain" in err and "Traceback" not in err


def test_chain_cli_and_inspect(tmp_path, cli):
    a = phys_net(["p", "q"], ["r"], "a")
    aann = phys_net(["p", "q"], ["p", "q"], "aann")
    a.save(tmp_path / "a.keras")
    aann.save(tmp_path / "aann.keras")
    out = tmp_path / "c.keras"
    code, stdout, err = cli("chain", tmp_path / "a.keras", "--scope", tmp_path / "aann.keras",
                            "--scope-metric", "sum_abs", "--scope-variables", "q", "-o", out)  # fmt: skip
    assert code == 0, err
    assert "sum_abs over 1 variables (q), out of scope above 0.01" in stdout
    info = chain_info(keras.saving.load_model(out))
    assert info["scope"] == {
        "metric": "sum_abs",
        "variables": ["q"],
        "threshold": 0.01,
        "step": "aann",
    }
    code, stdout, _ = cli("inspect", out)
    assert code == 0 and "step 1:      aann [scope]" in stdout and "step 2:      a:" in stdout
    code, _, err = cli("chain", tmp_path / "a.keras", "-o", tmp_path / "c.h5")
    assert code == 2 and "--output" in err
    code, _, err = cli("chain", tmp_path / "a.keras", "--scope-threshold", "0.1", "-o", out)
    assert code == 2 and "need --scope" in err


def test_chain_maps_each_input_once_and_cancels_inverse_maps():
    """The chain's inputs go through one shared InputTransform; a step taking an earlier
    step's pow10 output through log10 takes the network value itself; any other map of an
    earlier output (ln of a pow10 output here) is applied to the physical value."""
    rrs = phys_net(["Lrc_1", "Lrc_2", "Lrc_3"], ["Rrs_1", "Rrs_2"], "rrs", seed=1)
    aph = phys_net(["Rrs_2", "Rrs_1", "Lrc_3"], ["aph_1"], "aph", seed=2)
    odd = phys_net(["Rrs_1", "Lrc_1"], ["odd_1"], "odd", in_tf="ln", lo=-7.0, seed=3)
    model = chain([rrs, aph, odd])
    transforms = [l for l in model.layers if isinstance(l, InputTransform)]
    assert [l.name for l in transforms] == ["chain_inputs__transform", "odd__input_transform"]
    # odd takes Lrc_1 through ln, the others through log10: that column is mapped twice.
    assert transforms[0].names == ["Lrc_1", "Lrc_2", "Lrc_3", "Lrc_1"]
    assert transforms[0].transforms == ["log10"] * 3 + ["ln"]
    assert transforms[1].names == ["Rrs_1"]  # ln of a pow10 output: the physical value
    x = scene(400, 3)
    x[7, 2] = 0.0  # a log of zero in a shared column: the whole row is NaN
    y = mlnnkit.predict_array(model, x)
    r = mlnnkit.predict_array(rrs, x)
    a = mlnnkit.predict_array(aph, np.c_[r[:, 1], r[:, 0], x[:, 2]])
    o = mlnnkit.predict_array(odd, np.c_[r[:, 0], x[:, 0]])
    assert np.isnan(y[7]).all()
    ok = np.arange(400) != 7
    np.testing.assert_allclose(y[ok], np.c_[r, a, o][ok], rtol=1e-5)


def test_chain_flags_are_the_steps_flags_ored():
    """Bits 1, 2, 4 and 16 of a chain are those of its networks run one by one, OR-ed,
    also where two networks take the same column with different ranges (each shared
    column is tested once, against the intersection of the ranges)."""
    rrs = phys_net(["Lrc_1", "Lrc_2"], ["Rrs_1", "Rrs_2"], "rrs", lo=-2.5, hi=-0.5, seed=1)
    aph = phys_net(["Rrs_2", "Lrc_1"], ["aph_1"], "aph", lo=-3.0, hi=0.0, seed=2)
    model = chain([rrs, aph])
    x = scene(3000, 2, seed=5)
    x[11, 0] = -1.0
    y, f = mlnnkit.predict_array(model, x, flags=True)
    r, fr = mlnnkit.predict_array(rrs, x, flags=True)
    _, fa = mlnnkit.predict_array(aph, np.c_[r[:, 1], x[:, 0]], flags=True)
    assert f[11] & 16 and np.isnan(y[11]).all()
    np.testing.assert_array_equal(f, fr | fa)
    with np.errstate(invalid="ignore"):
        lrc = np.log10(x[:, 0])
    between = (lrc > -3.0) & (lrc < -2.5)  # inside aph's range, outside rrs's
    assert between.any() and (f[between] & 1).all()
    assert len(set((f & 7).tolist())) > 3  # the bits vary
