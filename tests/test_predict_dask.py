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
    """A header-only CSV with --dask: one line naming the file, exit 2, no output; the
    line of the local path (open_source refuses an empty input on every path)."""
    (tmp_path / "empty.csv").write_text(",".join(NAMES) + "\n")
    model.save(tmp_path / "m.keras")
    for extra in (("--dask",), ()):
        code, _out, err = cli("predict", tmp_path / "m.keras", tmp_path / "empty.csv", "-o",
                             tmp_path / "y.csv", *extra)  # fmt: skip
        assert code == 2
        assert err.strip().splitlines() == [
            f"error: {tmp_path / 'empty.csv'}: no data rows (only a header); nothing to predict"
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


def _flag_inputs(folder: Path, rng) -> None:
    """A NetCDF scene (CF-ish attributes, one line per crafted row set, many lines so
    every task holds a few) and the same rows as .npy, .csv and .parquet tables, for
    :func:`test_flags.crafted_net`: every flag bit occurs, in several tasks."""
    import pandas as pd
    import xarray as xr
    from test_flags import ROWS

    lines = 12
    crafted = np.array([r for r, _ in ROWS], np.float32)  # one line: every bit
    x1 = (10 ** rng.uniform(-2.2, 0.1, size=(lines, len(ROWS)))).astype("float32")
    x2 = rng.uniform(-1.0, 11.0, size=(lines, len(ROWS))).astype("float32")
    x1[0], x2[0] = crafted[:, 0], crafted[:, 1]
    x1[rng.random(x1.shape) < 0.05] = 0.0  # log10 of 0: invalid_input
    x2[rng.random(x2.shape) < 0.05] = np.nan
    folder.mkdir()
    attrs = {"units": "1", "long_name": "crafted input"}
    xr.Dataset(
        {"x1": (("line", "pixel"), x1, attrs), "x2": (("line", "pixel"), x2, attrs)},
        coords={"line": np.arange(lines), "pixel": np.arange(len(ROWS))},
        attrs={"title": "flag scene", "Conventions": "CF-1.8"},
    ).to_netcdf(folder / "scene.nc")
    x = np.stack([x1.reshape(-1), x2.reshape(-1)], 1)
    np.save(folder / "rows.npy", x)
    df = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1]})
    df.to_csv(folder / "rows.csv", index=False)
    df.to_parquet(folder / "rows.parquet", row_group_size=40)


def test_dask_flags_identical_to_local_run(tmp_path, rng, cluster):
    """--flags on Dask tasks: outputs, the quality_flags band (CF attributes) and column,
    OUT.flags.npy and the per-flag counts equal the local run's, bit for bit."""
    import pandas as pd
    import xarray as xr
    from test_flags import crafted_net

    from mlnnkit.predict import plan_jobs, predict_files, predict_files_dask

    model = crafted_net()
    _flag_inputs(tmp_path / "in", rng)
    files = [str(tmp_path / "in" / "*")]
    at_limit = []
    for margin in (0.02, 0.1):  # --limit-margin travels to the tasks
        local = predict_files(model, plan_jobs(files, tmp_path / f"local{margin}"),
                              block_rows=22, flags=True, limit_margin=margin)  # fmt: skip
        dist = predict_files_dask(model, plan_jobs(files, tmp_path / f"dask{margin}"),
                                  address=cluster, block_rows=22, flags=True,
                                  limit_margin=margin)  # fmt: skip
        assert [r.error for r in local + dist] == [None] * 8
        for a, b in zip(local, dist):
            assert (a.rows, a.masked_rows) == (b.rows, b.masked_rows)
            assert b.flag_counts == a.flag_counts
            assert all(n > 0 for k, n in b.flag_counts.items() if k != "out_of_scope"), (
                b.flag_counts
            )
        by = {r.input.suffix: (r.output, d.output) for r, d in zip(local, dist)}
        a, b = by[".nc"]
        with xr.open_dataset(a) as la, xr.open_dataset(b) as da:
            f = da["quality_flags"]
            assert f.dtype == np.uint8 and f.dims == ("line", "pixel")
            assert list(f.attrs["flag_masks"]) == [1, 2, 4, 8, 16]
            assert f.attrs["flag_meanings"].split()[0] == "input_out_of_range"
            assert f.values.tobytes() == la["quality_flags"].values.tobytes()
            assert da["y"].values.tobytes() == la["y"].values.tobytes()
            assert la.identical(da)  # every variable and attribute, flags' CF ones included
        a, b = by[".npy"]
        assert np.load(a).tobytes() == np.load(b).tobytes()
        fa, fb = (np.load(p.with_name(p.stem + ".flags.npy")) for p in (a, b))
        assert fb.dtype == np.uint8 and fa.tobytes() == fb.tobytes()
        for suffix, read in ((".csv", pd.read_csv), (".parquet", pd.read_parquet)):
            a, b = by[suffix]
            pd.testing.assert_frame_equal(read(a), read(b), check_exact=True)
            assert list(read(b).columns) == ["y", "quality_flags"]
        assert not list((tmp_path / f"dask{margin}").glob(".tmp-*"))
        at_limit.append(dist[0].flag_counts["output_at_limit"])
    assert at_limit[1] > at_limit[0]  # a wider margin: more rows at the limit


def test_cli_dask_flags_counts_like_local(tmp_path, rng, cli):
    """`predict --dask --flags` (local threads): the same files and flag lines as without --dask."""
    import xarray as xr
    from test_flags import crafted_net

    _flag_inputs(tmp_path / "in", rng)
    crafted_net().save(tmp_path / "m.keras")
    runs = {}
    for name, extra in (("local", ()), ("dask", ("--dask",))):
        code, out, err = cli("predict", tmp_path / "m.keras", tmp_path / "in" / "scene.nc",
                             "-o", tmp_path / f"{name}.nc", "--flags", "--limit-margin", "0.05",
                             "--block-rows", "33", *extra)  # fmt: skip
        assert code == 0, err
        runs[name] = [line for line in out.splitlines() if line.startswith("flag ")]
    assert len(runs["dask"]) == 5 and runs["dask"] == runs["local"]
    with xr.open_dataset(tmp_path / "local.nc") as a, xr.open_dataset(tmp_path / "dask.nc") as b:
        assert a.identical(b)
