"""Inference speed on the PACE-shaped network, side by side in one run.

Measures rows/s on the same rows of:

  (a) the float64 NumPy reference math (what OC-SMART does: matrix products + tanh),
  (b) ``keras.Model.predict`` at its default batch size and at its best batch size,
  (c) ``mlnnkit.predict_array`` with no batch size given,
  (d) onnxruntime on the network exported by ``mlnnkit.export.to_onnx`` (float32, threads =
      cores, its best chunk size found by a sweep), when the ``onnx`` extra is installed,

their ratios (predict_array / onnxruntime among them), the max error of (c) against (a) relative to each output's range, and the
fraction of the measured float32 matrix-product limit that (c) reaches (the limit: the
network's own matrix products alone, without bias or tanh, the faster of XLA and NumPy;
converted to rows/s with the network's FLOP per row; the fraction of the best 2048 x 2048
float32 product is printed too).

The network: ../shared/fixtures/ocsmart/PACE_Lrc_aaNN.H5 (111-111-57-111-107, tanh) through
``mlnnkit.legacy`` when both are there, else the same shape with random weights built from
keras Dense layers. Timings are the best of ``--repeats`` rounds, the methods interleaved
in each round so that load from other processes hits them alike. Rows per CPU-second (CPU
time of the process over all its threads) are printed too: on a busy machine they show
how much work each method spends per row, which wall-clock rates there cannot.

OpenBLAS: when OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set, the benchmark first times
NumPy's float64 reference with and without them (threadpoolctl shows the kernel chosen)
and runs itself with the faster setting, only in its own process: the NumPy baseline is
measured at its best.

    PYTHONPATH=src python benchmarks/predict_speed.py [--rows 2000000] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(
    os.environ.get("MLNNKIT_SHARED", REPO.parent / "shared")
) / "fixtures" / "ocsmart" / "PACE_Lrc_aaNN.H5"
SIZES = [111, 111, 57, 111, 107]
_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_CHOSEN = "MLNNKIT_BENCH_BLAS_CHOSEN"

_PROBE = r"""
import time, numpy as np, threadpoolctl
rng = np.random.default_rng(0)
ws = [rng.normal(size=(o, i)) for i, o in zip(%(sizes)r[:-1], %(sizes)r[1:])]
x = rng.uniform(-1, 1, size=(100_000, %(sizes)r[0]))
best = 1e9
for _ in range(3):
    t = time.perf_counter(); a = x
    for k, w in enumerate(ws):
        a = a @ w.T
        if k < len(ws) - 1: a = np.tanh(a)
    best = min(best, time.perf_counter() - t)
arch = next((i.get("architecture") for i in threadpoolctl.threadpool_info()
             if i.get("user_api") == "blas"), None)
print(len(x) / best, arch)
"""


def choose_blas_env() -> None:
    """Re-run this script with the OpenBLAS settings under which NumPy is fastest."""
    if os.environ.get(_CHOSEN) or not any(v in os.environ for v in _BLAS_VARS):
        return
    probe = _PROBE % {"sizes": SIZES}
    env_set = dict(os.environ)
    env_unset = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    res = {}
    for name, env in (("as set", env_set), ("unset", env_unset)):
        runs = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                                 text=True, check=True).stdout.split()  # fmt: skip
            runs.append((float(out[0]), out[1]))
        res[name] = max(runs)
    settings = ", ".join(f"{k}={os.environ[k]}" for k in _BLAS_VARS if k in os.environ)
    print(
        f"OpenBLAS: float64 reference {res['as set'][0] / 1e6:.3f} M rows/s with {settings} "
        f"(kernel {res['as set'][1]}), {res['unset'][0] / 1e6:.3f} M rows/s without "
        f"(kernel {res['unset'][1]})",
        flush=True,
    )
    env = env_unset if res["unset"][0] > res["as set"][0] else env_set
    env[_CHOSEN] = "unset" if env is env_unset else "as set"
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def load_network(rows: int, seed: int = 0):
    """(model, reference(x) -> float64 outputs, x float32, output ranges, description)."""
    import numpy as np

    try:
        from mlnnkit import legacy
        from mlnnkit.legacy import reference
    except ImportError:
        legacy = None
    if legacy is not None and FIXTURE.is_file():
        spec = legacy.read(FIXTURE)
        model = legacy.load(FIXTURE)
        lo, hi = spec.input_scaling.minimum, spec.input_scaling.maximum
        x = reference.sample_inputs(lo, hi, rows, seed=seed, edge_fraction=0.0).astype(np.float32)
        out_range = spec.output_scaling.maximum - spec.output_scaling.minimum

        def ref(xb):
            return reference.forward(spec, xb)

        return model, ref, x, out_range, f"{FIXTURE.name} via mlnnkit.legacy"

    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZES[0],))
    a = inp
    for i, s in enumerate(SIZES[1:]):
        a = keras.layers.Dense(s, activation="tanh" if i < len(SIZES) - 2 else None)(a)
    model = keras.Model(inp, a)
    params = [(np.asarray(d.kernel, np.float64), np.asarray(d.bias, np.float64))
              for d in model.layers if isinstance(d, keras.layers.Dense)]  # fmt: skip
    x = np.random.default_rng(seed).uniform(-1, 1, size=(rows, SIZES[0])).astype(np.float32)

    def ref(xb):  # the same float64 math, for the random-weight stand-in only
        a = np.asarray(xb, np.float64)
        for k, (w, b) in enumerate(params):
            a = a @ w + b
            if k < len(params) - 1:
                a = np.tanh(a)
        return a

    out_range = None  # from the reference outputs themselves
    why = "mlnnkit.legacy not available" if legacy is None else f"{FIXTURE} absent"
    return model, ref, x, out_range, f"random weights, same shape ({why})"


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process over all its threads) of one call."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def matmul_limit(chunk_rows: int, flop_per_row: int, repeats: int) -> dict:
    """Best measured float32 matrix-product rate (GFLOP/s) on this machine."""
    from concurrent.futures import ThreadPoolExecutor

    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(1)
    n = 2048
    a = rng.normal(size=(n, n)).astype(np.float32)
    flop = 2 * n**3
    out = {"numpy_sgemm_2048": flop / best_time(lambda: a @ a, repeats + 2) / 1e9}
    ja = jnp.asarray(a)
    mm = jax.jit(lambda u: u @ u)
    mm(ja).block_until_ready()
    out["xla_sgemm_2048"] = flop / best_time(lambda: mm(ja).block_until_ready(), repeats + 2) / 1e9

    ws = [jnp.asarray(rng.normal(size=(i, o)).astype(np.float32) / np.sqrt(i))
          for i, o in itertools.pairwise(SIZES)]  # fmt: skip
    chain = jax.jit(lambda u, ws: functools.reduce(lambda h, w: h @ w, ws, u))

    def run(xc, k):
        for _ in range(k):
            r = chain(xc, ws)
        r.block_until_ready()

    def go(xc, calls, threads):
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(functools.partial(run, xc), [calls // threads] * threads))

    best_chain = 0.0
    for rows in sorted({chunk_rows, 1024, 2048, 4096, 8192}):
        xc = jnp.asarray(rng.uniform(-1, 1, size=(rows, SIZES[0])).astype(np.float32))
        chain(xc, ws).block_until_ready()
        calls = max(4, 400_000 // rows)
        for threads in (1, 2):
            t = best_time(functools.partial(go, xc, calls, threads), repeats)
            best_chain = max(best_chain, (calls // threads) * threads * rows * flop_per_row / t / 1e9)
    out["xla_network_matmuls"] = best_chain
    xn = rng.uniform(-1, 1, size=(200_000, SIZES[0])).astype(np.float32)
    wn = [np.asarray(w) for w in ws]
    t = best_time(lambda: functools.reduce(lambda h, w: h @ w, wn, xn), repeats)
    out["numpy_network_matmuls"] = len(xn) * flop_per_row / t / 1e9
    # The limit for this network: its own matrix products alone (bias and tanh left out);
    # the best square product is reported beside it.
    out["limit"] = max(out["xla_network_matmuls"], out["numpy_network_matmuls"])
    out["best_square"] = max(out["numpy_sgemm_2048"], out["xla_sgemm_2048"])
    return out


def onnx_runner(model, probe, workdir: Path):
    """(run(x) -> outputs, best chunk rows, chunk sweep, description) for onnxruntime on
    the model exported to ONNX, or None without the onnx extra."""
    import numpy as np

    try:
        import onnxruntime as ort

        from mlnnkit.export import to_onnx
    except ImportError:
        return None
    path = workdir / "PACE.onnx"
    to_onnx(model, path, samples=2000)

    def session_for(spinning: bool):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = os.cpu_count() or 1  # threads = cores
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime's threads spin while waiting for work (its default); on a machine
        # shared with other processes that can cost more than it saves: both are tried.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    sessions = {True: session_for(True), False: session_for(False)}
    name = sessions[True].get_inputs()[0].name

    def run_chunked(x, chunk, spinning=True):
        s = sessions[spinning]
        return np.concatenate(
            [s.run(None, {name: x[i : i + chunk]})[0] for i in range(0, len(x), chunk)]
        )

    sweep = {}
    for spinning in (True, False):
        for chunk in (1024, 4096, 16384, 65536, 262144):
            if chunk > len(probe):
                continue
            run_chunked(probe[:chunk], chunk, spinning)  # warm up this shape
            run = functools.partial(run_chunked, probe, chunk, spinning)
            sweep[(chunk, spinning)] = len(probe) / best_time(run, 2)
    best, spin = max(sweep, key=sweep.get)
    what = (f"onnxruntime {ort.__version__}, {os.cpu_count()} intra-op threads, spinning "
            f"{'on' if spin else 'off'}, chunk {best} rows")  # fmt: skip
    shown = {f"{c}{'' if sp else ' (no spin)'}": r for (c, sp), r in sweep.items()}
    return functools.partial(run_chunked, chunk=best, spinning=spin), best, shown, what


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = p.parse_args(argv)

    choose_blas_env()
    sys.path.insert(0, str(REPO / "src"))
    os.environ.setdefault("KERAS_BACKEND", "jax")  # before Keras is first imported
    import keras
    import numpy as np
    import threadpoolctl

    import mlnnkit  # noqa: F401 - selects the JAX backend
    from mlnnkit import predict_array
    from mlnnkit.predict import forward_for

    model, ref, x, out_range, what = load_network(args.rows)
    n = len(x)
    flop_per_row = 2 * sum(i * o for i, o in itertools.pairwise(SIZES))
    fw = forward_for(model)  # compiled once here; predict_array reuses it
    blas = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"] or [{}]
    print(f"network: {'-'.join(map(str, SIZES))} tanh, {what}; {n:,} rows; "
          f"{flop_per_row:,} FLOP/row (matrix products)")  # fmt: skip
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; "
          f"numpy BLAS {blas[0].get('internal_api')} "
          f"{blas[0].get('architecture')} kernel, OpenBLAS env {os.environ.get(_CHOSEN, 'as set')}; "
          f"predict_array chunk {fw.chunk_rows} rows; jax {__import__('jax').__version__}, "
          f"keras {keras.__version__}")  # fmt: skip

    # Keras' best batch size, found on a slice of the rows.
    probe = x[: min(n, 262_144)]
    sweep = {}
    for bs in (1024, 4096, 8192, 16384, 32768, 65536):
        model.predict(probe[: 2 * bs], batch_size=bs, verbose=0)  # compile this batch shape
        run = functools.partial(model.predict, probe, batch_size=bs, verbose=0)
        sweep[bs] = len(probe) / best_time(run, 2)
    best_bs = max(sweep, key=sweep.get)
    print("keras predict batch-size sweep (M rows/s): "
          + ", ".join(f"{bs}: {r / 1e6:.2f}" for bs, r in sweep.items()), flush=True)  # fmt: skip

    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="mlnnkit-bench-"))
    onnx = onnx_runner(model, probe, workdir)
    if onnx is None:
        print('onnxruntime: not measured (the onnx extra is not installed: '
              'pip install "mlnnkit[onnx]")')  # fmt: skip
    else:
        print("onnxruntime chunk sweep (M rows/s): "
              + ", ".join(f"{c}: {r / 1e6:.2f}" for c, r in onnx[2].items())
              + f"; {onnx[3]}", flush=True)  # fmt: skip

    block = 100_000

    def reference_all():
        for i in range(0, n, block):
            ref(x[i : i + block])

    y_ours = {}

    def ours():
        y_ours["y"] = predict_array(model, x)

    def onnxruntime_all():
        y_ours["onnx"] = onnx[0](x)

    times = {"reference": float("inf"), "keras_best": float("inf"), "ours": float("inf")}
    methods = [("ours", ours), ("keras_best", lambda: model.predict(x, batch_size=best_bs, verbose=0)),
               ("reference", reference_all)]  # fmt: skip
    if onnx is not None:
        times["onnxruntime"] = float("inf")
        methods.insert(1, ("onnxruntime", onnxruntime_all))
    cpu = dict(times)
    for r in range(args.repeats):  # interleaved rounds
        for name, fn in methods:
            if name == "reference" and r >= max(1, args.repeats - 1):
                continue  # the slowest: one round fewer
            wall, c = timed(fn)
            times[name], cpu[name] = min(times[name], wall), min(cpu[name], c)
        print(f"round {r + 1}: " + ", ".join(f"{k} {n / v / 1e6:.3f}" for k, v in times.items()
                                               if v < float('inf')) + " M rows/s", flush=True)  # fmt: skip
    n_default = min(n, 500_000)
    wall, c = timed(lambda: model.predict(x[:n_default], verbose=0))
    times["keras_default"], cpu["keras_default"] = wall * n / n_default, c * n / n_default

    # accuracy of (c) against (a), per output relative to the output's range
    y = y_ours["y"]
    max_abs = np.zeros(y.shape[1])
    lo = np.full(y.shape[1], np.inf)
    hi = np.full(y.shape[1], -np.inf)
    for i in range(0, n, block):
        r64 = ref(x[i : i + block])
        max_abs = np.maximum(max_abs, np.abs(y[i : i + block] - r64).max(axis=0))
        lo, hi = np.minimum(lo, r64.min(axis=0)), np.maximum(hi, r64.max(axis=0))
    rng_out = out_range if out_range is not None else hi - lo
    rel = max_abs / rng_out
    onnx_rel = None
    if onnx is not None:
        yo, onnx_abs = y_ours["onnx"], np.zeros(y.shape[1])
        for i in range(0, n, block):
            r64 = ref(x[i : i + block])
            onnx_abs = np.maximum(onnx_abs, np.abs(yo[i : i + block] - r64).max(axis=0))
        onnx_rel = float((onnx_abs / rng_out).max())

    limit = matmul_limit(fw.chunk_rows, flop_per_row, args.repeats)
    limit_rows = limit["limit"] * 1e9 / flop_per_row
    rate = {k: n / v for k, v in times.items()}
    cpu_rate = {k: n / v for k, v in cpu.items()}
    res = {
        "network": what,
        "rows": n,
        "chunk_rows": fw.chunk_rows,
        "keras_best_batch_size": best_bs,
        "rows_per_s": rate,
        "rows_per_cpu_s": cpu_rate,
        "ratio_vs_reference": rate["ours"] / rate["reference"],
        "ratio_vs_keras_best": rate["ours"] / rate["keras_best"],
        "ratio_vs_keras_default": rate["ours"] / rate["keras_default"],
        "max_error_rel_range": float(rel.max()),
        "onnxruntime": None if onnx is None else {
            "what": onnx[3], "chunk_rows": onnx[1], "chunk_sweep": onnx[2],
            "max_error_rel_range": onnx_rel,
        },
        "ratio_vs_onnxruntime": rate["ours"] / rate["onnxruntime"] if onnx is not None else None,
        "matmul_gflops": limit,
        "matmul_limit_rows_per_s": limit_rows,
        "fraction_of_limit": rate["ours"] / limit_rows,
        "fraction_of_best_square_product": rate["ours"] * flop_per_row / 1e9 / limit["best_square"],
        "openblas_env": os.environ.get(_CHOSEN, "as set"),
        "load_average_end": os.getloadavg()[0],
    }
    print()
    print("| method | rows/s | vs float64 reference | rows per CPU-second |")
    print("|---|---:|---:|---:|")
    for k, label in (("reference", "float64 NumPy reference (a)"),
                     ("keras_default", "keras.Model.predict, default batch size (b)"),
                     ("keras_best", f"keras.Model.predict, batch size {best_bs} (b)"),
                     ("onnxruntime", f"onnxruntime on the exported .onnx, chunk {onnx[1] if onnx else '-'} (d)"),
                     ("ours", "mlnnkit.predict_array, no batch size (c)")):  # fmt: skip
        if k not in rate:
            continue
        print(f"| {label} | {rate[k] / 1e6:.3f} M | {rate[k] / rate['reference']:.1f}x | "
              f"{cpu_rate[k] / 1e6:.3f} M |")  # fmt: skip
    print(f"| the network's float32 matrix products alone ({limit['limit']:.0f} GFLOP/s) | "
          f"{limit_rows / 1e6:.3f} M | {limit_rows / rate['reference']:.1f}x | |")  # fmt: skip
    print()
    print(f"predict_array: {rate['ours'] / 1e6:.3f} M rows/s = {res['ratio_vs_reference']:.1f}x the "
          f"float64 reference, {res['ratio_vs_keras_best']:.2f}x keras predict at its best batch size, "
          f"{res['fraction_of_limit']:.0%} of the measured float32 matmul limit for this network "
          f"(its matrix products alone: XLA {limit['xla_network_matmuls']:.0f}, NumPy "
          f"{limit['numpy_network_matmuls']:.0f} GFLOP/s), "
          f"{res['fraction_of_best_square_product']:.0%} of the best square float32 product "
          f"(2048 x 2048: NumPy {limit['numpy_sgemm_2048']:.0f}, XLA {limit['xla_sgemm_2048']:.0f} "
          f"GFLOP/s)")  # fmt: skip
    print(f"max error vs float64 reference: {res['max_error_rel_range']:.2e} of the output range "
          f"(goal <= 1e-5)")  # fmt: skip
    if onnx is not None:
        print(f"predict_array / onnxruntime: {res['ratio_vs_onnxruntime']:.2f}x "
              f"({rate['ours'] / 1e6:.3f} vs {rate['onnxruntime'] / 1e6:.3f} M rows/s, same run; "
              f"per CPU-second {cpu_rate['ours'] / cpu_rate['onnxruntime']:.2f}x); onnxruntime's "
              f"max error vs float64 reference {onnx_rel:.2e} of the output range")  # fmt: skip
    goals = {
        ">= 1.2 M rows/s": rate["ours"] >= 1.2e6,
        ">= 12x reference": res["ratio_vs_reference"] >= 12,
        "> keras best": res["ratio_vs_keras_best"] > 1,
        "error <= 1e-5": res["max_error_rel_range"] <= 1e-5,
    }
    if onnx is not None:
        goals[">= onnxruntime"] = res["ratio_vs_onnxruntime"] >= 1
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other processes on the machine)")
    print("goals: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items()))
    res["goals"] = goals
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=float) + "\n")
    return res


if __name__ == "__main__":
    main()
