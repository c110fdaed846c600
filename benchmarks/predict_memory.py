"""Peak memory of `mlnnkit predict` on a MODIS-sized scene (the acceptance case).

A 7-input network of the seed's 7-100-1 shape (tanh hidden layer, random weights) is
applied to a 2,030 x 1,354 scene stored as seven NetCDF variables with 10% of the pixels
NaN, at the default chunk size, by `mlnnkit predict` in a child process. The script
reports the child's peak resident memory (its own ``VmHWM``, so it includes Python,
JAX and Keras), the same for a child that only loads the model (the
fixed cost), and checks the output: a variable of the scene's shape, NaN exactly where an
input is NaN, values equal to ``model.predict`` on a sample of pixels.

    PYTHONPATH=src python benchmarks/predict_memory.py [--lines 2030 --pixels 1354] [--json out.json]

Exit status 0 when the output is right and the peak is under ``--limit-mb`` (1000).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAMES = ["solz", "senz", "relaz", "Lrc_412", "Lrc_443", "Lrc_490", "Lrc_555"]

# The child reports its own peak: VmHWM of /proc/self/status (getrusage's ru_maxrss would
# include the parent's memory at fork time on Linux).
_CHILD = r"""
import resource, sys
from mlnnkit.cli import main
rc = main(sys.argv[1:]) if len(sys.argv) > 1 else 0
if len(sys.argv) == 1:  # baseline: imports and model loading only
    import mlnnkit, keras
    from mlnnkit.models import load_model
    load_model(%(model)r, compile=False)
try:
    peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
except OSError:  # not Linux: ru_maxrss (KB on Linux, bytes on macOS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("PEAK_KB", peak, flush=True)
sys.exit(rc)
"""


def make_inputs(folder: Path, lines: int, pixels: int, nan_fraction: float, seed: int = 0):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    import numpy as np
    import xarray as xr

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((7,)), keras.layers.Dense(100, activation="tanh"), keras.layers.Dense(1)]
    )
    model.save(folder / "net_7_100_1.keras")
    rng = np.random.default_rng(seed)
    data = rng.uniform(-1, 1, size=(7, lines, pixels)).astype("float32")
    masked = rng.random((lines, pixels)) < nan_fraction
    which = rng.integers(0, 7, size=(lines, pixels))  # NaN in one input per masked pixel
    for k in range(7):
        data[k][masked & (which == k)] = np.nan
    dims = ("number_of_lines", "pixels_per_line")
    variables = {n: (dims, data[k], {"long_name": n}) for k, n in enumerate(NAMES)}
    ds = xr.Dataset(variables, attrs={"title": "synthetic MODIS-sized granule"})
    ds.to_netcdf(folder / "scene.nc")
    return model, data, masked


def run_child(args: list[str], model: Path) -> tuple[int, float, float, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _CHILD % {"model": str(model)}, *args],
                       env=env, capture_output=True, text=True, check=False)  # fmt: skip
    seconds = time.perf_counter() - t
    peak = [ln for ln in p.stdout.splitlines() if ln.startswith("PEAK_KB")]
    kb = float(peak[-1].split()[1]) if peak else float("nan")
    return p.returncode, kb / 1024, seconds, p.stdout + p.stderr


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=2030)
    ap.add_argument("--pixels", type=int, default=1354)
    ap.add_argument("--nan-fraction", type=float, default=0.1)
    ap.add_argument("--limit-mb", type=float, default=1000.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-baseline", action="store_true", help="skip the model-only child")
    args = ap.parse_args(argv)

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="mlnnkit-mem-") as tmp:
        folder = Path(tmp)
        model, data, _ = make_inputs(folder, args.lines, args.pixels, args.nan_fraction)
        mpath = folder / "net_7_100_1.keras"
        out = folder / "scene_out.nc"
        code, peak_mb, seconds, log = run_child(
            ["predict", str(mpath), str(folder / "scene.nc"), "-o", str(out), "--no-progress"], mpath
        )
        if code != 0:
            print(log)
            raise SystemExit(f"mlnnkit predict failed with exit status {code}")
        base_mb = float("nan") if args.no_baseline else run_child([], mpath)[1]

        import xarray as xr

        with xr.open_dataset(out) as ds:
            y = ds["prediction"].values
            dims = ds["prediction"].dims
        nan_in = np.isnan(data).any(axis=0)
        shape_ok = y.shape == (args.lines, args.pixels) and dims == ("number_of_lines", "pixels_per_line")
        nan_ok = bool(np.array_equal(np.isnan(y), nan_in))
        rng = np.random.default_rng(1)
        ok_idx = np.flatnonzero(~nan_in.ravel())
        pick = rng.choice(ok_idx, size=min(10_000, ok_idx.size), replace=False)
        x = data.reshape(7, -1)[:, pick].T
        ref = model.predict(x, verbose=0)[:, 0]
        err = float(np.abs(y.ravel()[pick] - ref).max() / (np.ptp(ref) or 1.0))
    res = {
        "scene": [args.lines, args.pixels],
        "rows": args.lines * args.pixels,
        "nan_pixels": int(nan_in.sum()),
        "peak_rss_mb": peak_mb,
        "baseline_rss_mb": base_mb,
        "seconds_wall_child": seconds,
        "output_shape_ok": shape_ok,
        "nan_exactly_where_input_nan": nan_ok,
        "max_error_rel_range_sample": err,
        "limit_mb": args.limit_mb,
    }
    res["ok"] = bool(shape_ok and nan_ok and err <= 1e-5 and peak_mb < args.limit_mb)
    print(
        f"scene {args.lines} x {args.pixels} ({res['rows']:,} pixels, {res['nan_pixels']:,} NaN): "
        f"peak RSS {peak_mb:.0f} MB (imports + model alone: {base_mb:.0f} MB; limit "
        f"{args.limit_mb:.0f} MB), child wall {seconds:.1f} s; output shape "
        f"{'ok' if shape_ok else 'WRONG'}, NaN {'exactly where an input is NaN' if nan_ok else 'WRONG'}, "
        f"max error {err:.1e} of range -> {'PASS' if res['ok'] else 'FAIL'}"
    )
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
