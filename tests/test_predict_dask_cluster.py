"""`mlnnkit predict --dask tcp://...` on a real cluster: a `dask scheduler` and `dask worker`
processes of their own on 127.0.0.1 (nothing in-process), so the model, the tasks and the
results really travel between processes. Outputs are compared bit for bit with a local run;
a worker is killed with -9 while it holds tasks; a worker without mlnnkit is named."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_predict_files import NAMES

pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 120  # seconds for a process to come up on a busy machine


def _env(pythonpath: str | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = (
        pythonpath
        if pythonpath is not None
        else os.pathsep.join([str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    )
    env.setdefault("KERAS_BACKEND", "jax")
    return env


class Cluster:
    """A scheduler and worker processes on 127.0.0.1, torn down (killed) at the end."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: list[subprocess.Popen] = []
        self.logs = []
        file = folder / "scheduler.json"
        self.scheduler = self._spawn(
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(file)], "scheduler",
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not (file.is_file() and file.stat().st_size):
            self._alive(self.scheduler, deadline)
            time.sleep(0.1)
        time.sleep(0.2)  # the file is written in one go, but be safe on a slow disk
        self.address = json.loads(file.read_text())["address"]
        from distributed import Client

        self.client = Client(self.address, timeout="30s")  # watches the workers

    def _spawn(self, args, name, python_flags=(), env=None) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 - closed in close()
        self.logs.append(log)
        p = subprocess.Popen(
            [sys.executable, *python_flags, "-m", "dask", *args],
            stdout=log, stderr=subprocess.STDOUT, env=env or _env(), cwd=self.folder,
            start_new_session=True,
        )  # fmt: skip
        self.procs.append(p)
        return p

    def _alive(self, p: subprocess.Popen, deadline: float) -> None:
        if p.poll() is not None or time.monotonic() > deadline:
            logs = "\n".join((self.folder / f).read_text()[-2000:] for f in os.listdir(self.folder)
                             if f.endswith(".log"))  # fmt: skip
            raise RuntimeError(f"a cluster process did not start (exit {p.poll()}):\n{logs}")

    def add_workers(self, names, *, python_flags=(), env=None) -> dict[str, tuple]:
        """Start one worker process per name (one thread, no nanny: kill -9 really loses
        it), all at once; ``{name: (process, address)}`` once each has joined."""
        procs = {
            name: self._spawn(
                [
                    "worker",
                    self.address,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--name",
                    name,
                    "--local-directory",
                    str(self.folder / name),
                ],
                name,
                python_flags,
                env,
            )
            for name in names
        }
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            joined = {
                w["name"]: a for a, w in self.client.scheduler_info(n_workers=-1)["workers"].items()
            }
            if all(n in joined for n in names):
                return {n: (procs[n], joined[n]) for n in names}
            for p in procs.values():
                self._alive(p, deadline)
            time.sleep(0.1)

    def kill(self, p: subprocess.Popen, address: str) -> None:
        """kill -9 one worker and wait until the scheduler has dropped it."""
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        deadline = time.monotonic() + 60
        while address in self.client.nthreads() and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # tearing down whatever happened
            self.client.close(timeout=5)
        for p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)  # its own session: that process only
            p.wait(30)
        for log in self.logs:
            log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = None
    try:
        c = Cluster(tmp_path_factory.mktemp("cluster"))
        c.workers = c.add_workers(["w0", "w1"])
        yield c
    finally:
        if c is not None:
            c.close()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(11)
    m = keras.Sequential(
        [keras.Input((7,)), keras.layers.Dense(24, activation="tanh"), keras.layers.Dense(3)]
    )
    path = tmp_path_factory.mktemp("model") / "net.keras"
    m.save(path)
    return path


def write_scenes(folder: Path, rng, n: int, shape=(40, 25)) -> list[Path]:
    """``n`` small NetCDF scenes: seven float32 variables with fill values (NaN pixels)."""
    import xarray as xr

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        data = {}
        for name in NAMES:
            v = rng.uniform(0.001, 0.02, size=shape).astype("float32")
            v[rng.random(shape) < 0.05] = np.nan
            data[name] = (("y", "x"), v, {"units": "sr-1"})
        ds = xr.Dataset(data, coords={"y": np.arange(shape[0]), "x": np.arange(shape[1])},
                        attrs={"title": f"scene {i}"})  # fmt: skip
        enc = {n: {"_FillValue": -999.0, "zlib": True} for n in NAMES}
        paths.append(folder / f"scene_{i:02d}.nc")
        ds.to_netcdf(paths[-1], encoding=enc)
    return paths


def assert_same_outputs(local: Path, dist: Path, names: list[str]) -> None:
    import xarray as xr

    for name in names:
        with xr.open_dataset(local / name) as a, xr.open_dataset(dist / name) as b:
            for v in ("prediction_1", "prediction_2", "prediction_3"):
                x, y = a[v].values, b[v].values
                assert x.dtype == y.dtype == np.float32
                np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
                assert x.tobytes() == y.tobytes(), f"{name}:{v} differs from the local run"
                assert np.isfinite(x).any()
            assert a.identical(b), name  # every other variable and attribute kept
    assert not [p for p in dist.iterdir() if p.name.startswith(".tmp-")]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, model_file):
    """Six scenes and their outputs from a local run (no Dask) of the same command."""
    from mlnnkit.cli import main

    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root / "in", np.random.default_rng(3), 6)
    code = main(["predict", str(model_file), str(root / "in" / "*.nc"), "-o", str(root / "local")])
    assert code == 0
    return root


def test_cluster_outputs_identical_to_local_run(cluster, scenes, model_file, cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = cli("predict", model_file, scenes / "in" / "*.nc", "-o", f"{out}/",
                            "--dask", cluster.address, "--block-rows", "100")  # fmt: skip
    assert code == 0, err
    names = sorted(p.name for p in (scenes / "in").iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    assert stdout.count("1,000 rows") == 6
    assert_same_outputs(scenes / "local", out, names)
    # the same with --shared-storage: the workers read the model and the scenes themselves
    out2 = tmp_path / "out2"
    code, _, err = cli("predict", model_file, scenes / "in" / "*.nc", "-o", f"{out2}/",
                       "--dask", cluster.address, "--shared-storage")  # fmt: skip
    assert code == 0, err
    assert_same_outputs(scenes / "local", out2, names)


def test_cluster_imported_float64_legacy_network(cluster, scenes, cli, tmp_path):
    """An imported network (mlnnkit's own scaling layers, float64) travels as its .keras
    file too, computes float64 on the workers, and matches the local run bit for bit."""
    import xarray as xr
    from _legacy_nets import write_ocsmart

    write_ocsmart(tmp_path / "net.h5", [7, 9, 3], seed=4)
    code, _, err = cli("import", tmp_path / "net.h5", "-o", tmp_path / "net.keras", "--dtype", "float64",
                       "--samples", "500")  # fmt: skip
    assert code == 0, err
    inp = scenes / "in" / "scene_01.nc"
    assert cli("predict", tmp_path / "net.keras", inp, "-o", tmp_path / "local.nc")[0] == 0
    code, _, err = cli("predict", tmp_path / "net.keras", inp, "-o", tmp_path / "dask.nc",
                       "--dask", cluster.address, "--block-rows", "250")  # fmt: skip
    assert code == 0, err
    with xr.open_dataset(tmp_path / "local.nc") as a, xr.open_dataset(tmp_path / "dask.nc") as b:
        for v in ("prediction_1", "prediction_2", "prediction_3"):
            assert a[v].dtype == b[v].dtype == np.float64
            assert a[v].values.tobytes() == b[v].values.tobytes()
            assert np.isfinite(a[v].values).any() and np.isnan(a[v].values).any()


def test_cluster_flags_identical_to_local_run(cluster, cli, tmp_path):
    """--flags on worker processes (rows sent, then --shared-storage): the quality_flags
    band with its CF attributes, the outputs and the per-flag lines equal a local run's."""
    import xarray as xr
    from test_flags import crafted_net
    from test_predict_dask import _flag_inputs

    _flag_inputs(tmp_path / "in", np.random.default_rng(8))
    crafted_net().save(tmp_path / "m.keras")
    scene = tmp_path / "in" / "scene.nc"
    runs = {}
    for name, extra in (("local", ()), ("dask", ("--dask", cluster.address)),
                        ("shared", ("--dask", cluster.address, "--shared-storage"))):  # fmt: skip
        code, out, err = cli("predict", tmp_path / "m.keras", scene, "-o", tmp_path / f"{name}.nc",
                             "--flags", "--limit-margin", "0.05", "--block-rows", "33", *extra)  # fmt: skip
        assert code == 0, err
        runs[name] = [line for line in out.splitlines() if line.startswith("flag ")]
    assert len(runs["local"]) == 5 and runs["dask"] == runs["shared"] == runs["local"]
    with xr.open_dataset(tmp_path / "local.nc") as a:
        assert a["quality_flags"].values.any()
        for name in ("dask", "shared"):
            with xr.open_dataset(tmp_path / f"{name}.nc") as b:
                assert (
                    b["quality_flags"].attrs["flag_meanings"]
                    == a["quality_flags"].attrs["flag_meanings"]
                )
                assert b["quality_flags"].values.tobytes() == a["quality_flags"].values.tobytes()
                assert b["y"].values.tobytes() == a["y"].values.tobytes()
                assert a.identical(b), name


def test_cluster_unreadable_scene_reported_others_written(
    cluster, scenes, model_file, cli, tmp_path
):
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted((scenes / "in").iterdir())[:3]:
        (src / p.name).write_bytes(p.read_bytes())
    (src / "scene_99.nc").write_bytes(b"CDF\x01 this is not a complete file")
    code, _, err = cli("predict", model_file, src / "*.nc", "-o", tmp_path / "out",
                       "--dask", cluster.address)  # fmt: skip
    assert code == 2
    assert "scene_99.nc" in err and "error: 1 of 4 files failed" in err
    names = [p.name for p in sorted((scenes / "in").iterdir())[:3]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names
    assert_same_outputs(scenes / "local", tmp_path / "out", names)


def test_worker_without_mlnnkit_or_with_another_version_is_named(
    cluster, scenes, model_file, cli, tmp_path
):
    """A worker whose Python has no mlnnkit, and one with another mlnnkit version: each is
    named in one line (exit 2, nothing written), before any work is sent."""
    old = tmp_path / "old" / "mlnnkit"
    old.mkdir(parents=True)
    (old / "__init__.py").write_text('__version__ = "0.0.1"\n')  # an older install
    # A Python where `import mlnnkit` fails, whether mlnnkit is installed editable (a .pth)
    # or as a regular package (as in CI): a sitecustomize first on its path blocks it.
    blocker = tmp_path / "no_mlnnkit"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['mlnnkit'] = None\n")
    started = cluster.add_workers(["bare"], env=_env(pythonpath=str(blocker)))
    started |= cluster.add_workers(["old"], env=_env(pythonpath=str(tmp_path / "old")))
    expect = {
        "bare": "lacks mlnnkit (ModuleNotFoundError",
        "old": "has mlnnkit 0.0.1 but the client has",
    }
    try:
        for _ in range(2):
            code, _, err = cli("predict", model_file, scenes / "in" / "scene_00.nc", "-o",
                               tmp_path / "o.nc", "--dask", cluster.address)  # fmt: skip
            assert code == 2
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: Dask worker "), err
            (name,) = [n for n, (_, address) in started.items() if f" {address} " in lines[0]]
            assert expect[name] in lines[0], lines[0]
            assert not (tmp_path / "o.nc").exists()
            cluster.kill(*started.pop(name))
    finally:
        for p, address in started.values():
            cluster.kill(p, address)


def test_unreachable_scheduler_one_line_within_the_timeout(scenes, model_file, cli, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    code, _, err = cli("predict", model_file, scenes / "in" / "scene_00.nc", "-o", tmp_path / "o.nc",
                       "--dask", f"tcp://127.0.0.1:{port}", "--dask-timeout", "1.5")  # fmt: skip
    took = time.monotonic() - t0
    assert code == 2
    assert err.strip().splitlines() == [
        (
            f"error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port} within 1.5 s; "
            "check the address and that `dask scheduler` runs there"
        )
    ]
    assert took < 1.5 + 30, took  # a guard against hanging, not a timing goal
    assert not (tmp_path / "o.nc").exists()


def test_cluster_worker_killed_with_minus_9_mid_run(cluster, model_file, tmp_path):
    """A worker holding tasks is killed -9: its tasks run again on the other, and every
    output is complete, identical to a local run, written once, with no temporary file."""
    from mlnnkit.cli import main

    write_scenes(tmp_path / "in", np.random.default_rng(8), 8, shape=(120, 50))
    assert main(["predict", str(model_file), str(tmp_path / "in" / "*.nc"), "-o",
                 str(tmp_path / "local")]) == 0  # fmt: skip
    victim, victim_address = cluster.workers["w1"]  # warm: it has run the tests above
    out = tmp_path / "out"
    result = {}

    def run():
        result["code"] = main(["predict", str(model_file), str(tmp_path / "in" / "*.nc"), "-o",
                               str(out), "--dask", cluster.address, "--block-rows", "200"])  # fmt: skip

    t = threading.Thread(target=run)
    t.start()
    held = []
    try:
        deadline = time.monotonic() + 300
        while t.is_alive() and time.monotonic() < deadline:
            # mid-run: some scenes written, and the victim holds block tasks
            done = (
                len([p for p in out.glob("*.nc") if not p.name.startswith(".tmp-")])
                if out.is_dir()
                else 0
            )
            held = [k for k in cluster.client.processing(workers=[victim_address]).get(
                victim_address, []) if "predict" in str(k)]  # fmt: skip
            if done >= 1 and held:
                break
            time.sleep(0.005)
        written_before_kill = len(list(out.glob("scene_*.nc")))
        cluster.kill(victim, victim_address)
    finally:
        t.join(600)
    print(f"killed {victim_address} holding {len(held)} tasks, {written_before_kill} of 8 written")
    assert held, "the run ended before the victim held a task: no kill landed"
    assert written_before_kill < 8
    assert result["code"] == 0
    names = sorted(p.name for p in (tmp_path / "in").iterdir())
    assert sorted(p.name for p in out.iterdir()) == names  # no temporary file left
    assert_same_outputs(tmp_path / "local", out, names)


def test_cluster_scheduler_lost_mid_run_one_line(cluster, model_file, cli, tmp_path):
    """The scheduler killed -9 mid-run: one line, exit 2, finished outputs complete, none
    half-written. (Last: it ends the module's cluster.)"""
    import xarray as xr

    write_scenes(tmp_path / "in", np.random.default_rng(9), 8, shape=(120, 50))
    out = tmp_path / "out"
    result = {}

    def run():
        result["r"] = cli("predict", model_file, tmp_path / "in" / "*.nc", "-o", out, "--dask",
                          cluster.address, "--block-rows", "200", "--dask-timeout", "3")  # fmt: skip

    t = threading.Thread(target=run)
    t.start()
    try:
        deadline = time.monotonic() + 300
        while t.is_alive() and time.monotonic() < deadline and not list(out.glob("scene_*.nc")):
            time.sleep(0.005)
        cluster.scheduler.send_signal(signal.SIGKILL)
    finally:
        t.join(600)
    code, _, err = result["r"]
    written = sorted(p.name for p in out.iterdir())
    assert code == 2 and 1 <= len(written) < 8
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: lost the connection to the Dask scheduler"
    )
    assert f"{len(written)} of 8 outputs were written" in lines[0]
    for name in written:  # complete: renamed only when done
        assert not name.startswith(".tmp-")
        with xr.open_dataset(out / name) as ds:
            assert ds["prediction_1"].shape == (120, 50)
            assert np.isfinite(ds["prediction_1"].values).any()
