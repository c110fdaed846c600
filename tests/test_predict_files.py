"""`mlnnkit predict` on files: every input kind, NaN pixels, names, bad input, many files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

NAMES = [f"Rrs_{w}" for w in (412, 443, 490, 510, 555, 670, 765)]
H, W = 23, 17  # a small scene: 391 pixels


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((7,)), keras.layers.Dense(24, activation="tanh"), keras.layers.Dense(2)]
    )
    path = tmp_path_factory.mktemp("model") / "net.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def model(model_path):
    from mlnnkit.models import load_model

    return load_model(model_path, compile=False)


def reference(model, x):
    """model.predict on rows, NaN where an input is NaN."""
    x = np.asarray(x, np.float32)
    bad = np.isnan(x).any(axis=1)
    y = model.predict(np.where(bad[:, None], 0, x), verbose=0)
    y[bad] = np.nan
    return y


def assert_matches(y, ref):
    assert y.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(y[ok], ref[ok], rtol=1e-5, atol=1e-6)


def rows(rng, n=250, nan_fraction=0.1):
    x = rng.normal(size=(n, 7)).astype("float32")
    bad = rng.random(n) < nan_fraction
    x[bad, rng.integers(0, 7, bad.sum())] = np.nan
    return x


def no_output_left(folder: Path, name: str) -> bool:
    return not (folder / name).exists() and not list(folder.glob(".tmp-*"))


def write_scene_nc(path: Path, rng, *, names=NAMES, extra=True) -> np.ndarray:
    import xarray as xr

    data = rng.normal(size=(len(names), H, W)).astype("float32")
    mask = rng.random((H, W)) < 0.1
    data[:, mask] = np.nan
    data[2, 0, 0] = np.nan  # one pixel NaN in a single input only
    ds = xr.Dataset(
        {n: (("y", "x"), data[i], {"units": "sr-1", "long_name": n}) for i, n in enumerate(names)},
        coords={"y": np.arange(H) * 1.5, "x": np.arange(W) * 2.0},
        attrs={"title": "tiny granule", "platform": "test"},
    )
    if extra:
        ds["land_mask"] = (("y", "x"), (rng.random((H, W)) < 0.5).astype("int8"))
    ds.to_netcdf(path)
    return data


def test_npy_memory_mapped(tmp_path, rng, cli, model, model_path):
    x = rows(rng)
    np.save(tmp_path / "x.npy", x)
    code, out, err = cli("predict", model_path, tmp_path / "x.npy", "-o", tmp_path / "y.npy",
                         "--chunk-rows", "64")  # fmt: skip
    assert code == 0, err
    assert "250 rows" in out
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.float32
    assert_matches(y, reference(model, x))


def test_csv_columns_by_name_with_other_columns(tmp_path, rng, cli, model, model_path):
    import pandas as pd

    x = rows(rng, 301)
    df = pd.DataFrame(x, columns=NAMES)
    df.insert(0, "pixel_id", np.arange(301))
    df["flag"] = 1
    df.to_csv(tmp_path / "x.csv", index=False)
    code, _out, err = cli("predict", model_path, tmp_path / "x.csv", "-o", tmp_path / "y.csv",
                         "--inputs", "Rrs_*", "--outputs", "chl,tsm", "--chunk-rows", "100")  # fmt: skip
    assert code == 0, err
    y = pd.read_csv(tmp_path / "y.csv", dtype="float32")
    assert list(y.columns) == ["chl", "tsm"]
    assert_matches(y.to_numpy(), reference(model, x))

    # without --inputs the 9 columns do not fit 7 inputs: exit 2, one line, no output
    code, _out, err = cli("predict", model_path, tmp_path / "x.csv", "-o", tmp_path / "z.csv")
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "9 columns but the model takes 7 inputs" in err and "--inputs" in err
    assert no_output_left(tmp_path, "z.csv")


def test_csv_text_round_trips_float32(tmp_path, rng, cli, model_path):
    import pandas as pd

    x = rows(rng, 120, nan_fraction=0.0)
    np.save(tmp_path / "x.npy", x)
    pd.DataFrame(x, columns=NAMES).to_csv(tmp_path / "x.csv", index=False)
    assert cli("predict", model_path, tmp_path / "x.npy", "-o", tmp_path / "a.npy")[0] == 0
    assert cli("predict", model_path, tmp_path / "x.npy", "-o", tmp_path / "b.csv")[0] == 0
    a = np.load(tmp_path / "a.npy")
    b = pd.read_csv(tmp_path / "b.csv", dtype="float32").to_numpy()
    np.testing.assert_array_equal(a, b)


def test_parquet(tmp_path, rng, cli, model, model_path):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = rows(rng, 500)
    table = pa.Table.from_pandas(pd.DataFrame(x.astype("float64"), columns=NAMES))
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=120)
    code, _out, err = cli("predict", model_path, tmp_path / "x.parquet", "-o", tmp_path / "y.parquet",
                         "--block-rows", "90", "--chunk-rows", "32")  # fmt: skip
    assert code == 0, err
    y = pd.read_parquet(tmp_path / "y.parquet")
    assert list(y.columns) == ["prediction_1", "prediction_2"]
    assert all(str(t) == "float32" for t in y.dtypes)
    assert_matches(y.to_numpy(), reference(model, x))


def test_netcdf_scene_written_back_with_attributes(tmp_path, rng, cli, model, model_path):
    import xarray as xr

    data = write_scene_nc(tmp_path / "g.nc", rng)
    code, _out, err = cli("predict", model_path, tmp_path / "g.nc", "-o", tmp_path / "out.nc",
                         "--inputs", ",".join(NAMES), "--outputs", "chl,tsm",
                         "--chunk-rows", "50", "--block-rows", "40")  # fmt: skip
    assert code == 0, err
    with xr.open_dataset(tmp_path / "out.nc") as ds, xr.open_dataset(tmp_path / "g.nc") as src:
        assert ds.attrs["title"] == "tiny granule"  # global attributes kept
        for name in [*NAMES, "land_mask"]:  # the input file's variables kept as they were
            xr.testing.assert_identical(ds[name], src[name])
        np.testing.assert_array_equal(ds["y"].values, np.arange(H) * 1.5)
        for name in ("chl", "tsm"):
            assert ds[name].dims == ("y", "x") and ds[name].shape == (H, W)
            assert ds[name].dtype == np.float32
        y = np.stack([ds["chl"].values, ds["tsm"].values], axis=-1).reshape(-1, 2)
        assert ds["chl"].attrs["mlnnkit_inputs"] == ",".join(NAMES)
    x = data.reshape(7, -1).T
    assert_matches(y, reference(model, x))
    nan_in = np.isnan(data).any(axis=0)
    np.testing.assert_array_equal(np.isnan(y[:, 0]).reshape(H, W), nan_in)  # exactly there


def test_netcdf_fill_values_and_groups(tmp_path, rng, cli, model, model_path):
    import netCDF4

    data = rng.normal(size=(7, H, W)).astype("float32")
    data[:, 3, 4] = np.nan
    path = tmp_path / "l2.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("lines", H)
        nc.createDimension("pixels", W)
        g = nc.createGroup("geophysical_data")
        for i, n in enumerate(NAMES):  # int16 with scale/offset and a fill value, like L2 files
            v = g.createVariable(n, "i2", ("lines", "pixels"), fill_value=-32767, zlib=True)
            v.scale_factor, v.add_offset = 1e-4, 0.5
            v[:] = np.ma.array(np.nan_to_num(data[i]), mask=np.isnan(data[i]))
    code, _out, err = cli("predict", model_path, path, "-o", tmp_path / "o.nc",
                         "--inputs", ",".join(f"geophysical_data/{n}" for n in NAMES))  # fmt: skip
    assert code == 0, err
    with netCDF4.Dataset(tmp_path / "o.nc") as nc:
        g = nc["geophysical_data"]
        x = np.stack([g[n][:].filled(np.nan) for n in NAMES], axis=-1).reshape(-1, 7)
        y = np.stack([g[n][:].filled(np.nan) for n in ("prediction_1", "prediction_2")], -1)
    assert np.isnan(x[3 * W + 4]).all()
    assert_matches(y.reshape(-1, 2), reference(model, x))


def test_hdf5_datasets_in_a_group(tmp_path, rng, cli, model, model_path):
    import h5py

    data = rng.normal(size=(7, H, W)).astype("float32")
    data[:, rng.random((H, W)) < 0.1] = np.nan
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f.attrs["sensor"] = "test"
        g = f.create_group("obs")
        for i, n in enumerate(NAMES):
            g.create_dataset(n, data=data[i], chunks=(5, W), compression="gzip")
        f.create_dataset("time", data=np.arange(3.0))
    code, _out, err = cli("predict", model_path, tmp_path / "s.h5", "-o", tmp_path / "o.h5",
                         "--inputs", "obs/Rrs_*", "--chunk-rows", "30")  # fmt: skip
    assert code == 0, err
    with h5py.File(tmp_path / "o.h5") as f:
        assert f.attrs["sensor"] == "test"
        y = np.stack([f["obs/prediction_1"][()], f["obs/prediction_2"][()]], -1).reshape(-1, 2)
        assert f["obs/prediction_1"].shape == (H, W)
        np.testing.assert_array_equal(f["obs/Rrs_443"][()], data[1])
    assert_matches(y, reference(model, data.reshape(7, -1).T))


def test_python_api_predict_file(tmp_path, rng, model):
    from mlnnkit.predict import predict_file

    x = rows(rng, 99)
    np.save(tmp_path / "x.npy", x)
    seen = []
    r = predict_file(model, tmp_path / "x.npy", tmp_path / "y.npy", chunk_rows=16, progress=seen.append)
    assert r.rows == 99 and sum(seen) == 99
    assert r.masked_rows == int(np.isnan(x).any(axis=1).sum())
    assert_matches(np.load(tmp_path / "y.npy"), reference(model, x))


# ------------------------------------------------------------------------- bad input


def one_line_error(code, err, *needles):
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for n in needles:
        assert n in err, err


def test_missing_variable(tmp_path, rng, cli, model_path):
    write_scene_nc(tmp_path / "g.nc", rng, names=NAMES[:6] + ["Rrs_766"])
    code, _out, err = cli("predict", model_path, tmp_path / "g.nc", "-o", tmp_path / "o.nc",
                         "--inputs", ",".join(NAMES))  # fmt: skip
    one_line_error(code, err, "g.nc", "no variable 'Rrs_765'", "Rrs_766")
    assert no_output_left(tmp_path, "o.nc")
    # and without --inputs: 8 data variables for 7 inputs
    code, _out, err = cli("predict", model_path, tmp_path / "g.nc", "-o", tmp_path / "o.nc")
    one_line_error(code, err, "8 variables but the model takes 7 inputs", "--inputs")
    assert no_output_left(tmp_path, "o.nc")


def test_wrong_number_of_columns_npy(tmp_path, rng, cli, model_path):
    np.save(tmp_path / "x.npy", rng.normal(size=(40, 6)))
    code, _out, err = cli("predict", model_path, tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    one_line_error(code, err, "x.npy", "6 columns but the model takes 7 inputs")
    assert no_output_left(tmp_path, "y.npy")


@pytest.mark.parametrize("name", ["bad.nc", "bad.npy", "bad.h5", "bad.parquet"])
def test_unreadable_file(tmp_path, cli, model_path, name):
    (tmp_path / name).write_bytes(b"this is not a data file\n" * 10)
    out_name = "out" + Path(name).suffix
    code, _out, err = cli("predict", model_path, tmp_path / name, "-o", tmp_path / out_name)
    one_line_error(code, err, name, "cannot read")
    assert no_output_left(tmp_path, out_name)


def test_non_numeric_csv_value_midway_leaves_no_output(tmp_path, rng, cli, model_path):
    import pandas as pd

    df = pd.DataFrame(rows(rng, 300, 0.0), columns=NAMES).astype(object)
    df.loc[250, "Rrs_510"] = "n/a?"
    df.to_csv(tmp_path / "x.csv", index=False)
    code, _out, err = cli("predict", model_path, tmp_path / "x.csv", "-o", tmp_path / "y.csv",
                         "--block-rows", "100")  # fmt: skip
    one_line_error(code, err, "x.csv", "'Rrs_510'", "non-numeric", "data row 251")
    assert no_output_left(tmp_path, "y.csv")


def test_output_variable_exists_and_missing_input(tmp_path, rng, cli, model_path):
    write_scene_nc(tmp_path / "g.nc", rng, extra=False)
    code, _out, err = cli("predict", model_path, tmp_path / "g.nc", "-o", tmp_path / "o.nc",
                         "--outputs", "Rrs_412,b")  # fmt: skip
    one_line_error(code, err, "'Rrs_412' already exists", "--outputs")
    code, _out, err = cli("predict", model_path, tmp_path / "nope.nc", "-o", tmp_path / "o.nc")
    one_line_error(code, err, "input file not found", "nope.nc")
    code, _out, err = cli("predict", model_path, tmp_path / "g.nc", "-o", tmp_path / "o.npy",
                         "--outputs", "a")  # fmt: skip
    one_line_error(code, err, "--outputs names 1 outputs but the model has 2")
    code, _out, err = cli("predict", model_path, tmp_path / "g.nc", "-o", tmp_path / "o.h5")
    one_line_error(code, err, "must be netcdf too")
    assert no_output_left(tmp_path, "o.nc") and no_output_left(tmp_path, "o.h5")


def test_scene_to_table(tmp_path, rng, cli, model, model_path):
    data = write_scene_nc(tmp_path / "g.nc", rng, extra=False)
    code, _out, err = cli("predict", model_path, tmp_path / "g.nc", "-o", tmp_path / "o.npy")
    assert code == 0, err
    assert_matches(np.load(tmp_path / "o.npy"), reference(model, data.reshape(7, -1).T))


def test_many_files_one_failing(tmp_path, rng, cli, model, model_path):
    (tmp_path / "in").mkdir()
    xs = {}
    for i in range(3):
        xs[i] = rows(rng, 50 + i)
        np.save(tmp_path / "in" / f"s{i}.npy", xs[i])
    np.save(tmp_path / "in" / "s3.npy", rng.normal(size=(10, 3)))  # wrong columns
    code, _out, err = cli("predict", model_path, str(tmp_path / "in" / "*.npy"), "-o",
                         str(tmp_path / "out") + "/")  # fmt: skip
    assert code == 2
    assert "s3.npy" in err and "3 columns but the model takes 7" in err
    assert "1 of 4 files failed" in err
    for i in range(3):
        assert_matches(np.load(tmp_path / "out" / f"s{i}.npy"), reference(model, xs[i]))
    assert no_output_left(tmp_path / "out", "s3.npy")
