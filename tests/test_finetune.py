"""`mlnnkit finetune` on tiny plain Keras networks: freezing, L2-SP, the report, bad data."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras  # the backend is set by conftest.py
import numpy as np
import pytest

from mlnnkit import finetune as ft
from tests.test_cli import assert_one_line_error


def truth(x: np.ndarray) -> np.ndarray:
    return np.stack([np.sin(x[:, 0]) + x[:, 1] * x[:, 2], np.cos(x[:, 1])], axis=1)


def tiny_net(seed: int = 0, normalize_on: np.ndarray | None = None) -> keras.Model:
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((3,), name="inputs")]
    if normalize_on is not None:
        norm = keras.layers.Normalization(name="norm")
        norm.adapt(normalize_on)
        layers.append(norm)
    layers += [
        keras.layers.Dense(8, activation="tanh", name="hidden1"),
        keras.layers.Dense(8, activation="tanh", name="hidden2"),
        keras.layers.Dense(2, name="out"),
    ]
    return keras.Sequential(layers)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    """A tiny network fitted to truth(x), saved; the fine-tuning data are shifted from it."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (400, 3)).astype("float32")
    m = tiny_net()
    m.compile(keras.optimizers.Adam(0.02), "mse")
    m.fit(x, truth(x), epochs=40, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("orig") / "base.keras"
    m.save(path)
    return path


def shifted(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 3))
    return x, 1.2 * truth(x) + 0.3


def test_freeze_keeps_frozen_weights_bit_for_bit(original):
    model = ft.load_network(original)
    before = {ly.name: [w.copy() for w in ly.get_weights()] for ly in model.layers}
    x, y = shifted(200)
    res = ft.finetune(model, x, y, freeze=1, lr=1e-2, epochs=5, verbose=0)
    after = {ly.name: ly.get_weights() for ly in res.model.layers}
    for a, b in zip(before["hidden1"], after["hidden1"]):
        assert np.array_equal(a, b)  # frozen: not one bit moved
    for name in ("hidden2", "out"):
        assert not np.array_equal(before[name][0], after[name][0])  # trained
    assert res.report["finetuning"]["frozen_layers"] == ["hidden1"]
    # the saved model is trainable again like the original (freezing was this run's choice)
    assert all(ly.trainable for ly in res.model.layers)


def test_freeze_until_name_and_bad_freeze(original, tmp_path, cli):
    model = ft.load_network(original)
    assert ft.freeze_layers(model, freeze_until="hidden2") == ["hidden1", "hidden2"]
    assert [ly.name for ly in model.layers if ly.trainable] == ["out"]
    x, y = shifted(100)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    code, _, err = cli(
        "finetune", original, "--data", tmp_path / "d.npz", "-o", tmp_path / "o", "--freeze", "3"
    )
    assert_one_line_error(code, err, "--freeze 3", "3 Dense layers", "at most 2")
    code, _, err = cli(
        "finetune",
        original,
        "--data",
        tmp_path / "d.npz",
        "-o",
        tmp_path / "o",
        "--freeze-until",
        "hiden2",
    )
    assert_one_line_error(code, err, "no layer named 'hiden2'", "hidden2")
    assert not (tmp_path / "o" / "report.json").exists()


def test_l2sp_zero_at_start_and_keeps_weights_closer(original):
    x, y = shifted(200)
    model = ft.load_network(original)
    reg = ft.attach_l2sp(model, 0.5)
    assert len(reg) == 6  # kernels and biases of the three Dense layers
    assert ft.l2sp_penalty(model) == 0.0
    assert all(float(keras.ops.convert_to_numpy(loss)) == 0.0 for loss in model.losses)
    ft.detach_l2sp(reg)
    assert model.losses == []

    start = [w.copy() for w in ft.load_network(original).get_weights()]

    def distance(alpha: float) -> tuple[float, dict]:
        res = ft.finetune(
            ft.load_network(original),
            x,
            y,
            l2sp=alpha,
            lr=1e-2,
            epochs=30,
            patience=30,
            verbose=0,
            seed=3,
        )
        d = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(start, res.model.get_weights())))
        return float(d), res.report

    d_free, rep_free = distance(0.0)
    d_l2sp, rep_l2sp = distance(0.5)
    assert rep_l2sp["finetuning"]["l2sp_penalty_start"] == 0.0
    assert rep_l2sp["finetuning"]["l2sp_penalty_end"] > 0.0
    assert rep_free["finetuning"]["weight_distance_from_original"] == pytest.approx(
        d_free, rel=1e-5
    )
    assert d_l2sp < 0.7 * d_free, (d_l2sp, d_free)


def test_cli_report_contents_and_saved_model(original, tmp_path, cli):
    x, y = shifted(250)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "run"
    code, stdout, err = cli(
        "finetune",
        original,
        "--data",
        tmp_path / "d.npz",
        "-o",
        out,
        "--lr",
        "0.01",
        "--epochs",
        "40",
        "--seed",
        "2",
        "--compare-scratch",
    )
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    ratio = {"mult_bias", "mult_error", "mape", "mdsa", "sspb", "n_ratio", "n_nonpositive"}
    positive = rep.get("ocean_colour_metrics", {}).get("outputs")  # all-positive targets
    for key in ("original", "finetuned", "scratch"):
        assert set(rep[key]) == {"rmse", "mae", "bias", "r2"} | (ratio if positive else set())
    assert set(rep["per_output"]) == {"y[0]", "y[1]"}
    assert set(rep["per_output"]["y[1]"]) == {"original", "finetuned", "scratch"}
    assert (rep["n_train"], rep["n_val"], rep["n_test"]) == (160, 40, 50)
    # the original's numbers are those of the original network on the held-out rows
    _, _, te = ft.split_rows(250, 0.2, 0.2, 2)
    p0 = keras.saving.load_model(original).predict(x[te], verbose=0)
    assert rep["original"]["rmse"] == pytest.approx(np.sqrt(np.mean((p0 - y[te]) ** 2)), rel=1e-5)
    assert rep["original"]["bias"] == pytest.approx(np.mean(p0 - y[te]), rel=1e-4)
    assert rep["per_output"]["y[0]"]["original"]["mae"] == pytest.approx(
        np.mean(np.abs(p0[:, 0] - y[te, 0])), rel=1e-5
    )
    # ... and the fine-tuned numbers those of the saved model.keras
    p1 = keras.saving.load_model(out / "model.keras").predict(x[te], verbose=0)
    assert rep["finetuned"]["rmse"] == pytest.approx(np.sqrt(np.mean((p1 - y[te]) ** 2)), rel=1e-5)
    assert rep["finetuned"]["rmse"] < 0.5 * rep["original"]["rmse"]
    assert "fine-tuning helped" in stdout and "from scratch" in stdout
    for name in ("history.png", "scatter.png", "history_scratch.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".tmp-*"))
    # the saved model needs nothing of mlnnkit.finetune: no L2-SP regularizer, plain loss
    with zipfile.ZipFile(out / "model.keras") as z:
        cfg = z.read("config.json").decode()
    assert "L2SP" not in cfg and "StandardizedMSE" not in cfg


def test_table_columns_by_glob_and_scratch_keeps_fixed_layers(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(4)
    x = rng.normal(2.0, 3.0, (120, 3))
    y = truth(x)
    df = pd.DataFrame(
        {
            "id": np.arange(120),
            "Rrs_1": x[:, 0],
            "other": 0.0,
            "Rrs_2": x[:, 1],
            "Rrs_3": x[:, 2],
            "a": y[:, 0],
            "b": y[:, 1],
        }
    )
    df.to_parquet(tmp_path / "t.parquet")
    model = tiny_net(normalize_on=x)
    data = ft.read_data(tmp_path / "t.parquet", model, inputs="Rrs_*", targets="a,b")
    assert data.input_names == ["Rrs_1", "Rrs_2", "Rrs_3"]
    assert np.array_equal(data.x, x) and np.array_equal(data.y, y)
    scratch = ft.scratch_copy(model)
    for a, b in zip(model.get_layer("norm").get_weights(), scratch.get_layer("norm").get_weights()):
        assert np.array_equal(a, b)  # adapted statistics kept
    assert not np.array_equal(
        model.get_layer("hidden1").get_weights()[0], scratch.get_layer("hidden1").get_weights()[0]
    )  # re-initialized


def test_bad_data_exit_2(original, tmp_path, cli):
    import pandas as pd

    x, y = shifted(60)
    df = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "t1": y[:, 0], "t2": y[:, 1]})
    df.to_csv(tmp_path / "d.csv", index=False)
    run = lambda *a: cli("finetune", original, "-o", tmp_path / "o", *a)
    code, _, err = run("--data", tmp_path / "d.csv", "--inputs", "a,b", "--targets", "t1,t2")
    assert_one_line_error(code, err, "d.csv", "2 input columns (a, b)", "takes 3 inputs")
    code, _, err = run("--data", tmp_path / "d.csv", "--inputs", "a,b,c", "--targets", "t1")
    assert_one_line_error(code, err, "1 target columns", "2 outputs")
    code, _, err = run("--data", tmp_path / "d.csv", "--inputs", "a,b,c")
    assert_one_line_error(code, err, "--targets")
    code, _, err = run("--data", tmp_path / "d.csv", "--inputs", "a,b,x*", "--targets", "t1,t2")
    assert_one_line_error(code, err, "no column matches 'x*'")

    df.loc[7, "b"] = np.nan
    df.loc[9, "t2"] = np.inf
    df.to_csv(tmp_path / "nan.csv", index=False)
    code, _, err = run("--data", tmp_path / "nan.csv", "--inputs", "a,b,c", "--targets", "t1,t2")
    assert_one_line_error(
        code, err, "2 of 60 rows have NaN or Inf", "data row 8, column b", "--drop-nonfinite"
    )

    np.savez(tmp_path / "few.npz", x=x[:3], y=y[:3])
    code, _, err = run("--data", tmp_path / "few.npz")
    assert_one_line_error(code, err, "3 rows are too few", "--test-fraction 0.2", "0 validation")
    np.savez(tmp_path / "noy.npz", x=x, target=y)
    code, _, err = run("--data", tmp_path / "noy.npz")
    assert_one_line_error(code, err, "arrays 'x'", "x, target")
    np.savez(tmp_path / "rows.npz", x=x, y=y[:50])
    code, _, err = run("--data", tmp_path / "rows.npz")
    assert_one_line_error(code, err, "'x' has 60 rows but 'y' has 50")
    code, _, err = run("--data", tmp_path / "nope.npz")
    assert_one_line_error(code, err, "data file not found")
    assert not (tmp_path / "o").exists()


def test_drop_nonfinite_warns_and_trains(original, tmp_path, cli):
    x, y = shifted(80)
    x[3, 1] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=y)
    code, _, err = cli(
        "finetune",
        original,
        "--data",
        tmp_path / "d.npz",
        "-o",
        tmp_path / "o",
        "--drop-nonfinite",
        "--epochs",
        "2",
    )
    assert code == 0, err
    assert "warning:" in err and "1 of 80 rows have NaN" in err
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["dropped_nonfinite_rows"] == 1
    assert rep["n_train"] + rep["n_val"] + rep["n_test"] == 79
