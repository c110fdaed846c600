"""`mlnnkit predict --flags` (#12): the flag band in every file kind, its CF attributes
read back with xarray, and the per-flag counts at the end of the run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from test_flags import ROWS, crafted_net


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "crafted.keras"
    crafted_net().save(path)
    return path


def _want():
    x = np.array([r for r, _ in ROWS], np.float32)
    return x, np.array([f for _, f in ROWS], np.uint8)


def test_netcdf_scene_gets_a_cf_flag_variable(tmp_path, model_path, cli):
    x, want = _want()
    ds = xr.Dataset({
        "x1": (("line", "pixel"), x[:, 0].reshape(1, -1)),
        "x2": (("line", "pixel"), x[:, 1].reshape(1, -1)),
    })  # fmt: skip
    ds.to_netcdf(tmp_path / "scene.nc")
    code, out, err = cli("predict", model_path, tmp_path / "scene.nc", "-o", tmp_path / "o.nc",
                         "--flags", "--no-progress")  # fmt: skip
    assert code == 0, err
    res = xr.open_dataset(tmp_path / "o.nc")
    f = res["quality_flags"]
    assert f.dtype == np.uint8 and f.dims == ("line", "pixel")
    np.testing.assert_array_equal(f.values.reshape(-1), want)
    assert f.attrs["flag_meanings"].split() == [
        "input_out_of_range", "output_out_of_range", "output_at_limit", "out_of_scope",
        "invalid_input",
    ]  # fmt: skip
    assert list(f.attrs["flag_masks"]) == [1, 2, 4, 8, 16]
    assert "_FillValue" not in f.encoding or f.encoding["_FillValue"] is None
    assert "quality flags" in f.attrs["long_name"]
    # values are written whatever the flags say
    y = res["y"].values.reshape(-1)
    assert np.isfinite(y[want != 16]).all() and np.isnan(y[want == 16]).all()
    # one line per flag at the end of the run
    lines = [line for line in out.splitlines() if line.startswith("flag ")]
    assert len(lines) == 5
    counts = dict(zip(*[iter(w for line in lines for w in line.split()[1:3])] * 2))
    assert counts == {"input_out_of_range": "2", "output_out_of_range": "2",
                      "output_at_limit": "4", "out_of_scope": "0", "invalid_input": "4"}  # fmt: skip


def test_tables_get_a_flag_column_and_npy_a_sibling(tmp_path, model_path, cli):
    x, want = _want()
    df = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1]})
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    np.save(tmp_path / "t.npy", x)
    for src, dst in (("t.csv", "o.csv"), ("t.parquet", "o.parquet"), ("t.npy", "o.npy")):
        code, _, err = cli("predict", model_path, tmp_path / src, "-o", tmp_path / dst,
                           "--flags", "--limit-margin", "0")  # fmt: skip
        assert code == 0, err
    want0 = np.where(want == 4, 0, want)  # margin 0: no at-limit-only rows
    csv = pd.read_csv(tmp_path / "o.csv")
    assert list(csv.columns) == ["y", "quality_flags"]
    np.testing.assert_array_equal(csv["quality_flags"], want0)
    pq = pd.read_parquet(tmp_path / "o.parquet")
    assert pq["quality_flags"].dtype == np.uint8
    np.testing.assert_array_equal(pq["quality_flags"], want0)
    flags = np.load(tmp_path / "o.flags.npy")
    assert flags.dtype == np.uint8 and flags.shape == (len(x),)
    np.testing.assert_array_equal(flags, want0)
    assert np.load(tmp_path / "o.npy").shape == (len(x), 1)


def test_hdf5_scene_gets_a_flag_dataset(tmp_path, model_path, cli):
    import h5py

    x, want = _want()
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["x1"], f["x2"] = x[:, 0], x[:, 1]
    code, _, err = cli("predict", model_path, tmp_path / "s.h5", "-o", tmp_path / "o.h5", "--flags")
    assert code == 0, err
    with h5py.File(tmp_path / "o.h5") as f:
        np.testing.assert_array_equal(f["quality_flags"][:], want)
        assert f["quality_flags"].attrs["flag_masks"].tolist() == [1, 2, 4, 8, 16]


def test_flag_name_clash_and_bad_margin(tmp_path, model_path, cli):
    x, _ = _want()
    xr.Dataset(
        {"x1": ("n", x[:, 0]), "x2": ("n", x[:, 1]), "quality_flags": ("n", x[:, 1])}
    ).to_netcdf(tmp_path / "s.nc")
    code, _, err = cli("predict", model_path, tmp_path / "s.nc", "-o", tmp_path / "o.nc", "--flags")
    assert code == 2 and "'quality_flags' already exists" in err
    assert not (tmp_path / "o.nc").exists()
    code, _, err = cli("predict", model_path, tmp_path / "s.nc", "-o", tmp_path / "o.npy",
                       "--flags", "--limit-margin", "-1")  # fmt: skip
    assert code == 2 and "--limit-margin" in err


def test_output_name_clash_is_refused_and_a_template_renames_every_output(
    tmp_path, model_path, cli
):
    """A scene that has a variable of an output's name already (a chain's intermediate
    product, say): refused in one line that says how to rename; '{}_nn' renames them all."""
    x, want = _want()
    xr.Dataset(
        {"x1": ("n", x[:, 0]), "x2": ("n", x[:, 1]), "y": ("n", np.zeros(len(x), np.float32))}
    ).to_netcdf(tmp_path / "s.nc")
    code, _, err = cli("predict", model_path, tmp_path / "s.nc", "-o", tmp_path / "o.nc")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "variable 'y' already exists" in err and "--outputs '{}_nn' for y_nn" in err
    assert not (tmp_path / "o.nc").exists()
    code, _, err = cli("predict", model_path, tmp_path / "s.nc", "-o", tmp_path / "o.nc",
                       "--outputs", "{}_nn", "--flags", "--no-progress")  # fmt: skip
    assert code == 0, err
    res = xr.open_dataset(tmp_path / "o.nc")
    assert (res["y"].values == 0).all()  # the file's own variable, untouched
    np.testing.assert_array_equal(res["quality_flags"].values, want)
    import mlnnkit

    ref = mlnnkit.predict_array(mlnnkit.load_model(model_path), x)[:, 0]
    np.testing.assert_array_equal(res["y_nn"].values, ref)  # NaN where the flag is 16
    assert np.isnan(ref[want == 16]).all() and np.isfinite(ref[want != 16]).all()
    res.close()
    for bad in ("{}", "{}_{}"):
        code, _, err = cli("predict", model_path, tmp_path / "s.nc", "-o", tmp_path / "p.nc",
                           "--outputs", bad)  # fmt: skip
        assert code == 2 and "a template has one {}" in err, err
