"""Regression tests of issue #17 (part h17a), the file side: never write onto an input,
inputs chosen by glob in the file's own order (and the order printed), empty inputs in one
line naming the file, several inputs with a file output, a folder as input."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

WEIGHTS = [1.0, 10.0, 100.0]  # y = x0 + 10 x1 + 100 x2: tells the input order apart


@pytest.fixture(scope="module")
def order_model(tmp_path_factory) -> Path:
    """3 inputs -> 1 output, y = x @ [1, 10, 100]."""
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[-1].set_weights([np.array(WEIGHTS, "float32").reshape(3, 1)])
    path = tmp_path_factory.mktemp("model") / "order.keras"
    model.save(path)
    return path


def _one_line_error(code, err, *needles):
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for n in needles:
        assert str(n) in err, (n, err)


def _rows(n=20, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3)).astype("float32")


# ---- item 1: never write onto an input ------------------------------------------------------
@pytest.mark.parametrize("dask", [False, True])
def test_output_equal_to_the_npy_input_is_refused(cli, tmp_path, order_model, dask):
    x = tmp_path / "x.npy"
    np.save(x, _rows())
    before = x.read_bytes()
    extra = ["--dask"] if dask else []
    for out in (x, tmp_path / "sub" / ".." / "x.npy"):
        code, _, err = cli("predict", order_model, x, "-o", out, *extra)
        _one_line_error(code, err, "x.npy", "input")
        assert x.read_bytes() == before
    assert not (tmp_path / "sub").exists()


def test_output_equal_to_the_csv_input_is_refused(cli, tmp_path, order_model, monkeypatch):
    pd.DataFrame(_rows(), columns=["a", "b", "c"]).to_csv(tmp_path / "xin.csv", index=False)
    before = (tmp_path / "xin.csv").read_bytes()
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("predict", order_model, "xin.csv", "-o", str(tmp_path / "xin.csv"))
    _one_line_error(code, err, "xin.csv")
    assert (tmp_path / "xin.csv").read_bytes() == before


def test_output_that_is_the_same_file_as_an_input_is_refused(cli, tmp_path, order_model):
    x = tmp_path / "x.npy"
    np.save(x, _rows())
    before = x.read_bytes()
    os.link(x, tmp_path / "hard.npy")  # another name of the same file (same inode)
    (tmp_path / "soft.npy").symlink_to(x)
    for out in ("hard.npy", "soft.npy"):
        code, _, err = cli("predict", order_model, x, "-o", tmp_path / out)
        _one_line_error(code, err, out)
        assert x.read_bytes() == before


def test_a_folder_output_onto_any_input_is_refused(cli, tmp_path, order_model):
    a, outdir = tmp_path / "a.npy", tmp_path / "out"
    outdir.mkdir()
    np.save(a, _rows())
    os.link(a, outdir / "b.npy")  # out/b.npy is a.npy under another name
    np.save(tmp_path / "b.npy", _rows(seed=1))
    before = a.read_bytes()
    for dask in ([], ["--dask"]):
        code, _, err = cli("predict", order_model, a, tmp_path / "b.npy", "-o", outdir, *dask)
        _one_line_error(code, err, "b.npy")
        assert a.read_bytes() == before
    # the input's own folder as the output folder
    code, _, err = cli("predict", order_model, a, "-o", tmp_path)
    _one_line_error(code, err, "a.npy")
    assert a.read_bytes() == before


def test_library_refuses_to_write_onto_its_input(tmp_path, order_model):
    from mlnnkit.errors import UserError
    from mlnnkit.models import load_model
    from mlnnkit.predict import predict_file

    x = tmp_path / "x.npy"
    np.save(x, _rows())
    with pytest.raises(UserError, match="input"):
        predict_file(load_model(order_model, compile=False), x, x)


def test_replacing_an_existing_output_is_said(cli, tmp_path, order_model):
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, _rows())
    code, out, err = cli("predict", order_model, x, "-o", y)
    assert code == 0, err
    assert "replaced the existing file" not in out
    code, out, err = cli("predict", order_model, x, "-o", y)
    assert code == 0, err
    line = next(l for l in out.splitlines() if l.startswith(str(y)))
    assert "replaced the existing file" in line


# ---- item 2: glob order is the file's own ------------------------------------------------
def _h5(path, names, *, track_order, group=None, values=None):
    values = values or {}
    with h5py.File(path, "w", track_order=track_order) as f:
        g = f.create_group(group, track_order=track_order) if group else f
        for n in names:
            g[n] = np.full((4, 5), values.get(n, 0.0), "float32")
        f["lat"] = np.zeros((4, 5), "float32")  # not matched by the glob


VALUES = {"Rrs_412": 1.0, "Rrs_443": 2.0, "Rrs_1020": 3.0}


def _y(names):
    return sum(w * VALUES[n] for w, n in zip(WEIGHTS, names))


@pytest.mark.parametrize(
    "created, track, expected, note",
    [
        # creation order kept by the file: that order, whatever the names
        (["Rrs_412", "Rrs_443", "Rrs_1020"], True, ["Rrs_412", "Rrs_443", "Rrs_1020"], "HDF5 creation order"),
        (["Rrs_1020", "Rrs_412", "Rrs_443"], True, ["Rrs_1020", "Rrs_412", "Rrs_443"], "HDF5 creation order"),
        # no creation order: names, numbers compared as numbers (412 < 443 < 1020)
        (["Rrs_1020", "Rrs_443", "Rrs_412"], False, ["Rrs_412", "Rrs_443", "Rrs_1020"], "numbers compared as numbers"),
    ],
)
@pytest.mark.parametrize("group", [None, "geophys"])
def test_hdf5_glob_takes_the_files_order(cli, tmp_path, order_model, created, track, expected, note, group):
    src = tmp_path / "scene.h5"
    _h5(src, created, track_order=track, group=group, values=VALUES)
    glob = "geophys/*" if group else "Rrs_*"
    code, out, err = cli("predict", order_model, src, "-o", tmp_path / "out.h5", "--inputs", glob)
    assert code == 0, err
    with h5py.File(tmp_path / "out.h5") as f:
        y = f[("geophys/" if group else "") + "prediction"][()]
    np.testing.assert_allclose(y, _y(expected), rtol=1e-6)
    shown = ", ".join((f"{group}/" if group else "") + n for n in expected)
    line = next(l for l in out.splitlines() if "inputs" in l and shown in l)
    assert note in line, out


def test_the_chosen_order_is_printed_for_tables(cli, tmp_path, order_model):
    df = pd.DataFrame(_rows(), columns=["Rrs_443", "Rrs_412", "Rrs_1020"])
    df.to_csv(tmp_path / "t.csv", index=False)
    code, out, err = cli("predict", order_model, tmp_path / "t.csv", "-o", tmp_path / "o.csv", "--inputs", "Rrs_*")
    assert code == 0, err
    assert any("inputs Rrs_443, Rrs_412, Rrs_1020" in l and "column order" in l for l in out.splitlines()), out
    y = pd.read_csv(tmp_path / "o.csv")["prediction"].to_numpy()
    np.testing.assert_allclose(y, df.to_numpy() @ np.array(WEIGHTS), rtol=1e-5, atol=1e-4)
    # named one by one: the order given
    code, out, err = cli(
        "predict", order_model, tmp_path / "t.csv", "-o", tmp_path / "o2.csv",
        "--inputs", "Rrs_412,Rrs_443,Rrs_1020",
    )
    assert code == 0, err
    assert any("inputs Rrs_412, Rrs_443, Rrs_1020" in l and "as given" in l for l in out.splitlines()), out


def test_the_chosen_order_is_printed_for_npy(cli, tmp_path, order_model):
    np.save(tmp_path / "x.npy", _rows())
    code, out, err = cli("predict", order_model, tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert code == 0, err
    assert any("inputs column_0, column_1, column_2" in l for l in out.splitlines()), out


# ---- item 10: empty inputs -----------------------------------------------------------------
@pytest.mark.parametrize("dask", [False, True])
@pytest.mark.parametrize("kind", ["header-csv", "empty-csv", "npy", "parquet"])
def test_an_empty_input_is_one_line_naming_the_file(cli, tmp_path, order_model, kind, dask):
    if kind == "header-csv":
        src = tmp_path / "empty.csv"
        src.write_text("a,b,c\n")
    elif kind == "empty-csv":
        src = tmp_path / "empty.csv"
        src.write_text("")
    elif kind == "npy":
        src = tmp_path / "empty.npy"
        np.save(src, np.zeros((0, 3), "float32"))
    else:
        src = tmp_path / "empty.parquet"
        pd.DataFrame({c: np.zeros(0, "float32") for c in "abc"}).to_parquet(src)
    out = tmp_path / f"o{src.suffix}"
    code, _, err = cli("predict", order_model, src, "-o", out, *(["--dask"] if dask else []))
    _one_line_error(code, err, src)
    assert "reshape" not in err
    assert not out.exists()


def test_an_empty_table_for_training_and_finetuning_is_one_line(cli, tmp_path, order_model):
    from helpers import regression_config, write_config

    src = tmp_path / "empty.csv"
    src.write_text("f0,f1,f2,target\n")
    cfg = write_config(tmp_path / "c.toml", regression_config(src))
    code, _, err = cli("train", cfg, "-o", tmp_path / "run")
    _one_line_error(code, err, src, "no data rows")
    code, _, err = cli(
        "finetune", order_model, "--data", src, "--inputs", "f0,f1,f2", "--targets", "target",
        "-o", tmp_path / "ft",
    )
    _one_line_error(code, err, src, "no data rows")
    npz = tmp_path / "empty.npz"
    np.savez(npz, x=np.zeros((0, 3)), y=np.zeros((0, 1)))
    code, _, err = cli("finetune", order_model, "--data", npz, "-o", tmp_path / "ft")
    _one_line_error(code, err, npz, "no data rows")


# ---- smaller ones --------------------------------------------------------------------------
def test_several_inputs_with_a_file_output_are_refused(cli, tmp_path, order_model):
    for n in ("a", "b"):
        np.save(tmp_path / f"{n}.npy", _rows())
    code, _, err = cli("predict", order_model, tmp_path / "a.npy", tmp_path / "b.npy", "-o", tmp_path / "single.npy")
    _one_line_error(code, err, "single.npy", "folder")
    assert not (tmp_path / "single.npy").exists()
    code, _, err = cli("predict", order_model, str(tmp_path / "*.npy"), "-o", tmp_path / "single.npy")
    _one_line_error(code, err, "single.npy")
    assert not (tmp_path / "single.npy").exists()
    # a trailing slash asks for the folder
    code, _, err = cli("predict", order_model, tmp_path / "a.npy", tmp_path / "b.npy", "-o", f"{tmp_path / 'outs'}/")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "outs").iterdir()) == ["a.npy", "b.npy"]


def test_a_folder_as_input_says_so(cli, tmp_path, order_model):
    folder = tmp_path / "scenes.nc"
    folder.mkdir()
    plain = tmp_path / "scenes"
    plain.mkdir()
    for f in (folder, plain):
        code, _, err = cli("predict", order_model, f, "-o", tmp_path / "o.nc")
        _one_line_error(code, err, f, "is a folder")
        assert "not found" not in err
