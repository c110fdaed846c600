"""Training speed of the seed's network: stock Keras fit vs ``mlnnkit train``, side by side.

The seed's Fashion-MNIST classifier (``examples/seed_fashion_mnist.toml``: Flatten,
Dense 128 relu, Dropout 0.2, Dense 10 softmax, adam, batch 32, 5 epochs) is trained in
one run of this script by

- ``keras-jax``:   stock Keras on the JAX backend as the seed's notes run it: the raw
                   uint8 arrays divided by ``255.0`` (so float64 arrays), the same
                   Sequential model, ``model.fit(x_train, y_train, epochs=5)``. This is
                   the "stock Keras fit on JAX" of issue #7 (1.2-1.3 s/epoch there);
- ``keras-jax-f32``: ``model.fit`` on JAX given the float32 arrays mlnnkit's loader makes
                   (what ``mlnnkit train --engine keras`` runs): a stronger baseline,
                   reported side by side so neither ratio hides the other,
- ``keras-tf``:    the seed's code on TensorFlow, when TensorFlow is importable,
- ``mlnnkit``:     ``mlnnkit.train.run`` on the config (what ``mlnnkit train`` does,
                   run directory, callbacks and all) with an empty compile cache (cold),
- ``mlnnkit-warm``: the same again with the compiled program in the cache.

Each is a fresh Python process (nobody inherits another's warm JAX state); the rounds are
interleaved and repeated ``--repeat`` times. Seconds per epoch are wall seconds of the
fit call divided by the epochs, compilation included: the median of the rounds, and the
best round ("best"). "cpu s/ep" is the CPU time of the fit call per epoch (all threads);
on a machine shared with other work it is steadier than wall time.
The float32 matrix-product rate of this machine is measured in the same run (square
GEMMs through XLA on all cores); the "matmul limit" of an epoch is its FLOPs
(6 x samples x weights of the Dense layers: forward, and two products backward) at that
rate.

Usage::

    python benchmarks/train_speed.py [--epochs 5] [--repeat 1] [--json out.json]

The machine should be quiet: timings of a shared machine are noisy (the script prints
the load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "seed_fashion_mnist.toml"


# ------------------------------------------------------------------ worker processes
def _load(epochs: int):
    from mlnnkit.config import load_config
    from mlnnkit.data import load_data
    from mlnnkit.train import apply_overrides

    cfg = apply_overrides(load_config(CONFIG), epochs=epochs)
    return cfg, load_data(cfg)


def worker_keras_seed(epochs: int) -> dict:
    """The seed's notes verbatim: ``x / 255.0`` (float64 arrays) and ``model.fit``."""
    import keras
    import numpy as np

    from mlnnkit.data.images import load_arrays

    a = load_arrays("fashion_mnist")
    x_train, x_test = a["x_train"] / 255.0, a["x_test"] / 255.0
    y_train, y_test = a["y_train"], a["y_test"]
    keras.utils.set_random_seed(42)
    model = keras.models.Sequential([
        keras.Input(shape=(28, 28)),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(x_train, y_train, epochs=epochs, verbose=2)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    test = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    return {
        "backend": keras.backend.backend(),
        "input_dtype": str(np.asarray(x_train).dtype),
        "fit_seconds": seconds,
        "fit_cpu_seconds": cpu,
        "epochs": epochs,
        "accuracy": float(test["accuracy"]),
    }


def worker_keras(epochs: int) -> dict:
    """Keras fit on the config's model and mlnnkit's float32 arrays (backend from env)."""
    import keras

    from mlnnkit.build import build_model

    cfg, ds = _load(epochs)
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg, x_train=ds.x_train)
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(
        ds.x_train, ds.y_train, epochs=cfg.fit.epochs, batch_size=cfg.fit.batch_size,
        shuffle=cfg.fit.shuffle, verbose=2,
    )
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    test = model.evaluate(ds.x_test, ds.y_test, batch_size=256, verbose=0, return_dict=True)
    return {
        "backend": keras.backend.backend(),
        "input_dtype": str(ds.x_train.dtype),
        "fit_seconds": seconds,
        "fit_cpu_seconds": cpu,
        "epochs": cfg.fit.epochs,
        "accuracy": float(test["accuracy"]),
    }


def worker_mlnnkit(epochs: int) -> dict:
    """``mlnnkit train`` as a library call (run directory in a temporary folder)."""
    from mlnnkit import train

    cpu = {}
    fit = train.fit

    def timed_fit(*args, **kwargs):  # the CPU seconds of the fit call alone
        c0 = time.process_time()
        try:
            return fit(*args, **kwargs)
        finally:
            cpu["fit"] = time.process_time() - c0

    train.fit = timed_fit
    cfg, ds = _load(epochs)
    with tempfile.TemporaryDirectory() as out:
        res = train.run(cfg, out, verbose=2, data=ds)
    m = res.metrics
    return {
        "backend": m["backend"],
        "engine": m["engine"],
        "fit_seconds": m["fit_seconds"],
        "fit_cpu_seconds": cpu["fit"],
        "epochs": m["epochs"],
        "accuracy": float(m["test"]["accuracy"]),
    }


def worker_gemm() -> dict:
    """Best float32 GEMM rate (FLOP/s) of square products through XLA, all cores."""
    import jax
    import jax.numpy as jnp

    best = 0.0
    for n in (512, 1024, 2048):
        a = jnp.ones((n, n), jnp.float32)
        f = jax.jit(lambda a: a @ a)
        f(a).block_until_ready()
        reps = max(3, int(2e10 / (2 * n**3)))
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                r = f(a)
            r.block_until_ready()
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return {"gemm_flops": best}


WORKERS = {"keras-seed": worker_keras_seed, "keras": worker_keras, "mlnnkit": worker_mlnnkit}


def _spawn(kind: str, epochs: int, env_extra: dict[str, str]) -> dict | None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.update(env_extra)
    cmd = [sys.executable, __file__, "--worker", kind, "--epochs", str(epochs)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        sys.stderr.write(f"[{kind} {env_extra}] failed:\n{proc.stderr[-2000:]}\n")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _tf_available() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import tensorflow"], capture_output=True, text=True, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return probe.returncode == 0


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"


def _flops_per_epoch(epochs: int) -> float:
    import numpy as np

    from mlnnkit.build import build_model

    cfg, ds = _load(epochs)
    model = build_model(cfg, x_train=ds.x_train[:1], compile=False)
    weights = sum(
        int(np.prod(layer.kernel.shape)) for layer in model.layers if hasattr(layer, "kernel")
    )
    return 6.0 * len(ds.x_train) * weights


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    p.add_argument("--worker", choices=[*WORKERS, "gemm"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        os.environ.setdefault("KERAS_BACKEND", "jax")
        out = worker_gemm() if args.worker == "gemm" else WORKERS[args.worker](args.epochs)
        print(json.dumps(out))
        return 0

    sys.path.insert(0, str(REPO / "src"))
    os.environ.setdefault("KERAS_BACKEND", "jax")
    load_before = os.getloadavg()
    has_tf = _tf_available()
    runs: dict[str, list[dict]] = {
        "keras-jax": [], "keras-jax-f32": [], "keras-tf": [], "mlnnkit": [], "mlnnkit-warm": []
    }
    gemm: list[float] = []
    for rnd in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache:
            cache_env = {"MLNNKIT_CACHE_DIR": cache}
            order = [
                ("keras-jax", "keras-seed", {"KERAS_BACKEND": "jax"}),
                ("keras-jax-f32", "keras", {"KERAS_BACKEND": "jax"}),
                ("mlnnkit", "mlnnkit", cache_env),
                ("mlnnkit-warm", "mlnnkit", cache_env),
            ]
            if has_tf:
                order.insert(2, ("keras-tf", "keras-seed", {"KERAS_BACKEND": "tensorflow"}))
            for name, kind, env in order:
                print(f"round {rnd + 1}/{args.repeat}: {name} ...", file=sys.stderr, flush=True)
                res = _spawn(kind, args.epochs, env)
                if res is not None:
                    runs[name].append(res)
        g = _spawn("gemm", args.epochs, {})
        if g:
            gemm.append(g["gemm_flops"])
    load_after = os.getloadavg()

    flops = _flops_per_epoch(args.epochs)
    rate = max(gemm) if gemm else float("nan")
    limit = flops / rate
    rows = {}
    for name, results in runs.items():
        if not results:
            continue
        spe = statistics.median(r["fit_seconds"] / r["epochs"] for r in results)
        best = min(r["fit_seconds"] / r["epochs"] for r in results)
        acc = statistics.median(r["accuracy"] for r in results)
        cpe = statistics.median(r["fit_cpu_seconds"] / r["epochs"] for r in results)
        rows[name] = {"s_per_epoch": spe, "best_s_per_epoch": best, "cpu_s_per_epoch": cpe, "accuracy": acc, "runs": results,
                      "engine": results[0].get("engine", "keras")}

    print(f"\nmachine: {_machine()}; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"float32 GEMM: {rate / 1e9:.0f} GFLOP/s; seed network: {flops:.3g} FLOP/epoch "
          f"-> matmul limit {limit:.3f} s/epoch")
    print(f"{args.epochs} epochs, batch 32, median (and best) of {args.repeat} run(s), "
          "compilation included\n")
    print(f"{'run':14s} {'engine':8s} {'input':8s} {'s/epoch':>8s} {'best':>6s} {'cpu s/ep':>9s} "
          f"{'test acc':>9s} {'x keras-jax':>12s} {'x keras-f32':>12s} {'of limit':>9s}")
    base = rows.get("keras-jax", {}).get("s_per_epoch")
    base32 = rows.get("keras-jax-f32", {}).get("s_per_epoch")
    for name, row in rows.items():
        speed = f"{base / row['s_per_epoch']:.2f}x" if base else "-"
        speed32 = f"{base32 / row['s_per_epoch']:.2f}x" if base32 else "-"
        dtype = row["runs"][0].get("input_dtype", "float32")
        print(f"{name:14s} {row['engine']:8s} {dtype:8s} {row['s_per_epoch']:8.3f} "
              f"{row['best_s_per_epoch']:6.3f} {row['cpu_s_per_epoch']:9.3f} "
              f"{row['accuracy']:9.4f} "
              f"{speed:>12s} {speed32:>12s} {limit / row['s_per_epoch']:9.0%}")
    if not has_tf:
        print("keras-tf: skipped (TensorFlow is not importable in this environment)")
    for label, key in (("cold", "mlnnkit"), ("compiled program cached", "mlnnkit-warm")):
        if key not in rows:
            continue
        ours = rows[key]
        checks = {"s/epoch <= 0.5": ours["s_per_epoch"] <= 0.5}
        for ref in ("keras-jax", "keras-jax-f32"):
            if ref in rows:
                r = rows[ref]
                checks[f">= 2.4x {ref}"] = r["s_per_epoch"] / ours["s_per_epoch"] >= 2.4
                checks[f"accuracy within 0.5 points of {ref}"] = (
                    abs(ours["accuracy"] - r["accuracy"]) <= 0.005
                )
        print(f"\nacceptance ({label} mlnnkit run): " + ", ".join(
            f"{k}: {'yes' if ok else 'NO'}" for k, ok in checks.items()))
    if args.json:
        args.json.write_text(json.dumps({
            "machine": _machine(), "load_before": load_before, "load_after": load_after,
            "gemm_flops": rate, "flops_per_epoch": flops, "limit_s_per_epoch": limit,
            "epochs": args.epochs, "results": rows,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
