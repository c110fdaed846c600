"""`mlnnkit predict --dask`: the same results as the local path, on a real LocalCluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_predict_files import NAMES, rows, write_scene_nc

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None
    ) as c, Client(c) as client:  # fmt: skip
        yield client


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(5)
    return keras.Sequential(
        [keras.Input((7,)), keras.layers.Dense(20, activation="tanh"), keras.layers.Dense(3)]
    )


def make_inputs(folder: Path, rng) -> None:
    import h5py
    import pandas as pd

    folder.mkdir()
    for i in range(3):
        write_scene_nc(folder / f"scene{i}.nc", rng, extra=False)
    np.save(folder / "rows.npy", rows(rng, 1001))
    pd.DataFrame(rows(rng, 333), columns=NAMES).to_csv(folder / "rows.csv", index=False)
    pd.DataFrame(rows(rng, 444), columns=NAMES).to_parquet(
        folder / "rows.parquet", row_group_size=100
    )
    with h5py.File(folder / "scene.h5", "w") as f:
        for n in NAMES:
            f.create_dataset(n, data=rng.normal(size=(9, 31)).astype("float32"))


def read_any(path: Path) -> np.ndarray:
    import h5py
    import pandas as pd
    import xarray as xr

    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype="float32").to_numpy()
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_numpy()
    if path.suffix == ".h5":
        with h5py.File(path) as f:
            return np.stack([f[f"prediction_{i}"][()] for i in (1, 2, 3)], -1)
    with xr.open_dataset(path) as ds:
        return np.stack([ds[f"prediction_{i}"].values for i in (1, 2, 3)], -1)


def test_dask_results_identical_to_local_path_on_several_files(tmp_path, rng, cluster, model):
    from mlnnkit.predict import plan_jobs, predict_files, predict_files_dask

    make_inputs(tmp_path / "in", rng)
    local = predict_files(model, plan_jobs([str(tmp_path / "in" / "*")], tmp_path / "local"),
                          block_rows=64)  # fmt: skip
    jobs = plan_jobs([str(tmp_path / "in" / "*")], tmp_path / "dask")
    done = []
    dist = predict_files_dask(model, jobs, address=cluster, block_rows=64, on_done=done.append)
    assert len(dist) == len(local) == 7
    assert all(r.error is None for r in dist + local), [r.error for r in dist + local]
    assert sorted(r.input for r in done) == sorted(r.input for r in dist)
    for a, b in zip(local, dist):
        assert a.rows == b.rows and a.masked_rows == b.masked_rows
        ya, yb = read_any(a.output), read_any(b.output)
        np.testing.assert_array_equal(ya, yb)  # identical, NaNs in the same places
        assert np.isfinite(ya).any()
    assert not list((tmp_path / "dask").glob(".tmp-*"))


def test_dask_failing_file_reported_by_name_others_written(tmp_path, rng, cluster, model):
    from mlnnkit.predict import plan_jobs, predict_files_dask

    (tmp_path / "in").mkdir()
    good = rows(rng, 500)
    np.save(tmp_path / "in" / "a.npy", good)
    np.save(tmp_path / "in" / "b.npy", rng.normal(size=(20, 4)))  # wrong columns
    (tmp_path / "in" / "c.nc").write_bytes(b"not netcdf")
    write_scene_nc(tmp_path / "in" / "d.nc", rng, extra=False)
    jobs = plan_jobs([str(tmp_path / "in" / "*")], tmp_path / "out")
    res = {r.input.name: r for r in predict_files_dask(model, jobs, address=cluster, block_rows=50)}
    assert res["a.npy"].error is None and res["d.nc"].error is None
    assert "b.npy" in res["b.npy"].error and "4 columns" in res["b.npy"].error
    assert "c.nc" in res["c.nc"].error and "cannot read" in res["c.nc"].error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy", "d.nc"]
    y = np.load(tmp_path / "out" / "a.npy")
    np.testing.assert_array_equal(np.isnan(y).any(1), np.isnan(good).any(1))


def test_dask_failure_inside_a_task_removes_that_output(tmp_path, rng, cluster, model):
    """A block that fails on a worker (file changed after it was opened) fails its file only."""
    import pandas as pd

    from mlnnkit.predict import predict_files_dask

    bad = tmp_path / "bad.csv"
    pd.DataFrame(rows(rng, 60, 0.0), columns=NAMES).astype(object).assign(
        Rrs_412=lambda d: d.Rrs_412.where(d.index != 40, "oops")
    ).to_csv(bad, index=False)
    np.save(tmp_path / "ok.npy", rows(rng, 70))
    jobs = [(bad, tmp_path / "out" / "bad.csv"), (tmp_path / "ok.npy", tmp_path / "out" / "ok.npy")]
    res = predict_files_dask(model, jobs, address=cluster)
    assert "non-numeric" in res[0].error and "Rrs_412" in res[0].error
    assert res[1].error is None and res[1].rows == 70
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok.npy"]


def test_cli_dask_on_local_threads(tmp_path, rng, cli, model):
    x = rows(rng, 300)
    np.save(tmp_path / "x.npy", x)
    model.save(tmp_path / "m.keras")
    code, _out, err = cli("predict", tmp_path / "m.keras", tmp_path / "x.npy", "-o",
                         tmp_path / "y.npy", "--dask", "--block-rows", "100")  # fmt: skip
    assert code == 0, err
    import mlnnkit

    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), mlnnkit.predict_array(model, x))
    code, _out, err = cli("predict", tmp_path / "m.keras", tmp_path / "x.npy", "tcp://127.0.0.1:9",
                         "-o", tmp_path / "z.npy")  # fmt: skip
    assert code == 2 and "add --dask" in err


def test_cli_dask_empty_input_named_exit_2(tmp_path, cli, model):
    """A header-only CSV with --dask: one line naming the file, exit 2, no output."""
    (tmp_path / "empty.csv").write_text(",".join(NAMES) + "\n")
    model.save(tmp_path / "m.keras")
    code, _out, err = cli("predict", tmp_path / "m.keras", tmp_path / "empty.csv", "-o",
                         tmp_path / "y.csv", "--dask")  # fmt: skip
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: {tmp_path / 'empty.csv'}: no rows to predict (the file holds no data)"
    ]
    assert not (tmp_path / "y.csv").exists()
    code, _out, err = cli("predict", tmp_path / "m.keras", tmp_path / "empty.csv", "-o",
                         tmp_path / "y.csv", "--dask", "--shared-storage")  # fmt: skip
    assert code == 2 and "--shared-storage is for --dask with a scheduler address" in err


def test_model_travels_as_file_bytes_loaded_once_by_content_hash(tmp_path, model, rng):
    import hashlib

    from mlnnkit.errors import UserError
    from mlnnkit.predict._dask import ModelRef, model_ref, worker_model

    model.save(tmp_path / "m.keras")
    data = (tmp_path / "m.keras").read_bytes()
    ref = model_ref(tmp_path / "m.keras")
    assert ref.blob == data and ref.key == hashlib.sha256(data).hexdigest() and ref.path is None
    assert "bytes" in repr(ref) and len(repr(ref)) < 100  # never the bytes themselves
    loaded = worker_model(ref)
    assert loaded is not model and worker_model(ref) is loaded  # loaded once, then cached
    x = rows(rng, 50)
    import mlnnkit

    np.testing.assert_array_equal(mlnnkit.predict_array(loaded, x), mlnnkit.predict_array(model, x))
    shared = model_ref(tmp_path / "m.keras", shared_storage=True)
    assert shared.blob is None and shared.path == str((tmp_path / "m.keras").resolve())
    assert shared.key == ref.key
    # a worker that sees another file at the shared path is refused, naming the path
    other = ModelRef("0" * 64, "m.keras", path=str(tmp_path / "m.keras"))
    with pytest.raises(UserError, match="sees another file at .*m.keras than the client"):
        worker_model(other)
    with pytest.raises(UserError, match="pass the model as the path"):
        model_ref(model, shared_storage=True)
    from_object = model_ref(model)  # a built model travels as .keras bytes too
    assert from_object.name.endswith(".keras") and from_object.blob[:2] == b"PK"  # a zip
