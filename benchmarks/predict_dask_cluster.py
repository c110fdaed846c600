"""`mlnnkit predict --dask` on a real cluster on this machine: figures for docs/predict.md.

Starts a `dask scheduler` and N `dask worker` processes (one thread each, no nanny) on
127.0.0.1, writes S NetCDF scenes (seven float32 variables, 10% of the pixels NaN) and
applies a 7-100-1 tanh network to all of them:

- locally (`predict_files`, no Dask), then on local threads (`--dask`, no address);
- on the cluster with the model's bytes and the input rows sent by the client (default),
  and with `--shared-storage` (the workers read the model and the scenes themselves);
  each twice: the first run includes loading and compiling the model on every worker;
- on the cluster again with one more worker (its first run, then a run in which it is
  killed with -9 after the first output is written: its tasks are rerun on the others).

Every Dask output is compared bit for bit with the local one. Times are wall-clock of the
call in this process (Python, JAX and Keras already imported here; the workers' own
imports are in the first cluster run).

    PYTHONPATH=src python benchmarks/predict_dask_cluster.py [--scenes 6 --lines 1015 --pixels 677 --workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NAMES = ["solz", "senz", "relaz", "Lrc_412", "Lrc_443", "Lrc_490", "Lrc_555"]


def make_scenes(folder: Path, n: int, lines: int, pixels: int) -> list[Path]:
    import xarray as xr

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    out = []
    for i in range(n):
        data = {}
        for name in NAMES:
            v = rng.uniform(0, 1, (lines, pixels)).astype("float32")
            v[rng.random((lines, pixels)) < 0.1 / len(NAMES)] = np.nan
            data[name] = (("line", "pixel"), v)
        out.append(folder / f"granule_{i}.nc")
        xr.Dataset(data).to_netcdf(out[-1])
    return out


class Cluster:
    def __init__(self, folder: Path, n_workers: int):
        self.folder, self.procs = folder, []
        folder.mkdir(parents=True)
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        )
        self.env = env
        sched = folder / "scheduler.json"
        self._spawn(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(sched)], "scheduler")  # fmt: skip
        while not (sched.is_file() and sched.stat().st_size):
            time.sleep(0.1)
        time.sleep(0.2)
        self.address = json.loads(sched.read_text())["address"]
        from distributed import Client

        self.client = Client(self.address, timeout="60s")
        self.workers = {}
        for i in range(n_workers):
            self.add_worker(f"w{i}")

    def _spawn(self, args, name):
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115
        p = subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log,
                             stderr=subprocess.STDOUT, env=self.env, start_new_session=True)  # fmt: skip
        self.procs.append(p)
        return p

    def add_worker(self, name):
        p = self._spawn(["worker", self.address, "--nthreads", "1", "--no-nanny", "--host",
                         "127.0.0.1", "--no-dashboard", "--name", name,
                         "--local-directory", str(self.folder / name)], name)  # fmt: skip
        while True:
            info = self.client.scheduler_info(n_workers=-1)["workers"]
            hit = [a for a, w in info.items() if w["name"] == name]
            if hit:
                self.workers[name] = (p, hit[0])
                return p, hit[0]
            time.sleep(0.1)

    def close(self):
        self.client.close()
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def same(a: Path, b: Path) -> bool:
    import xarray as xr

    with xr.open_dataset(a) as x, xr.open_dataset(b) as y:
        return x["prediction"].values.tobytes() == y["prediction"].values.tobytes()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=6)
    ap.add_argument("--lines", type=int, default=1015)
    ap.add_argument("--pixels", type=int, default=677)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    import keras

    import mlnnkit  # noqa: F401 - the JAX backend
    from mlnnkit.predict import plan_jobs, predict_files, predict_files_dask

    root = Path(tempfile.mkdtemp(prefix="mlnnkit-dask-bench-"))
    scenes = make_scenes(root / "in", args.scenes, args.lines, args.pixels)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((7,)), keras.layers.Dense(100, activation="tanh"),
                              keras.layers.Dense(1)])  # fmt: skip
    model.save(root / "net.keras")
    rows = args.scenes * args.lines * args.pixels
    print(f"{args.scenes} scenes of {args.lines} x {args.pixels} ({rows:,} rows, "
          f"{sum(p.stat().st_size for p in scenes) / 1e6:.0f} MB), 7-100-1 tanh, "
          f"{args.workers} workers x 1 thread; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    table = []

    def run(label, fn, out):
        t0 = time.perf_counter()
        res = fn(plan_jobs([str(root / "in" / "*.nc")], root / out))
        dt = time.perf_counter() - t0
        assert all(r.error is None for r in res), [r.error for r in res]
        ok = (
            all(same(root / "local" / p.name, root / out / p.name) for p in scenes)
            if out != "local"
            else True
        )
        left = [p.name for p in (root / out).iterdir() if p.name.startswith(".tmp-")]
        table.append((label, dt, rows / dt, ok and not left))
        print(f"| {label} | {dt:.2f} s | {rows / dt / 1e6:.2f} M rows/s | {'identical' if ok else 'DIFFERENT'}"
              f"{', temporary files left' if left else ''} |", flush=True)  # fmt: skip

    from mlnnkit.models import load_model_for_predict

    net = load_model_for_predict(root / "net.keras")
    run("local, no Dask (`predict_files`)", lambda j: predict_files(net, j), "local")
    run("`--dask`, local threads", lambda j: predict_files_dask(net, j), "threads")
    cluster = Cluster(root / "cluster", args.workers)
    try:
        runs = [
            ("cluster, bytes and rows sent, 1st run (workers load + compile)", False),
            ("cluster, bytes and rows sent, 2nd run", False),
            ("cluster, `--shared-storage`, 1st run (workers load the path)", True),
            ("cluster, `--shared-storage`, 2nd run", True),
        ]
        for i, (label, shared) in enumerate(runs):
            run(
                label,
                lambda j, s=shared: predict_files_dask(
                    root / "net.keras", j, address=cluster.address, shared_storage=s
                ),
                f"c{i}",
            )
        victim, vaddr = cluster.add_worker("victim")
        run(f"cluster + 1 worker ({args.workers + 1}), bytes and rows sent, 1st run", lambda j: predict_files_dask(
            root / "net.keras", j, address=cluster.address), "c4")  # fmt: skip
        out = root / "killed"
        killed = {}

        def killer():
            while not list(out.glob("granule_*.nc")):
                time.sleep(0.01)
            killed["tasks"] = len(cluster.client.processing(workers=[vaddr]).get(vaddr, []))
            victim.send_signal(signal.SIGKILL)

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        run("cluster + 1 worker killed -9 after the first output (bytes and rows sent)",
            lambda j: predict_files_dask(root / "net.keras", j, address=cluster.address), "killed")  # fmt: skip
        print(f"  the killed worker held {killed.get('tasks')} tasks when killed")
    finally:
        cluster.close()
    return 0 if all(t[3] for t in table) else 1


if __name__ == "__main__":
    sys.exit(main())
