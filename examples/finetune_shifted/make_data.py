"""Fine-tuning example: data that a legacy network no longer fits.

Takes a legacy retrieval network (an OC-SMART ``.h5`` or ffbp ``.net``; without one, writes
a 7-100-1 OC-SMART network with random weights, the seed's shape), draws input rows inside
the network's own input ranges, computes its outputs and changes them systematically
(``y' = gain * y + shift * (output range)``): the situation of a network meeting a new
sensor or a regional data set. Writes ``OUT/data.npz`` (arrays ``x``, ``y``) and, when it
made one, ``OUT/net_7_100_1.h5``.

Usage:
    python examples/finetune_shifted/make_data.py OUT [--net FILE] [--rows 1250]
    mlnnkit finetune FILE --data OUT/data.npz -o OUT/run --compare-scratch

With the default split (20% held out, 20% of the rest for early stopping), 1,250 rows give
1,000 rows to fine-tune on (800 fitted, 200 for early stopping) and 250 held-out rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def write_ocsmart_7_100_1(path: Path, seed: int = 0) -> Path:
    """A 7-100-1 network in the OC-SMART MLNN HDF5 layout (random weights, MATLAB orientation)."""
    import h5py

    rng = np.random.default_rng(seed)
    sizes = [7, 100, 1]
    with h5py.File(path, "w") as f:
        f["Layers"] = np.array(sizes, dtype="int16")
        lo = rng.uniform(-3, 0, 7)
        f["Norm_in"] = np.stack([lo, lo + rng.uniform(0.5, 3, 7)], axis=1)
        f["Norm_out"] = np.array([[-2.0, 1.5]])
        for k in (1, 2):
            fan_in = sizes[k - 1]
            f[f"Weights/Layer{k}"] = rng.normal(0, 1 / np.sqrt(fan_in), (sizes[k], fan_in))
            f[f"Bias/Layer{k}"] = rng.normal(0, 0.1, (sizes[k], 1))
    return path


def make(out: Path, net: Path | None, rows: int, gain: float, shift: float, seed: int) -> Path:
    import mlnnkit
    from mlnnkit import legacy

    out.mkdir(parents=True, exist_ok=True)
    if net is None:
        net = write_ocsmart_7_100_1(out / "net_7_100_1.h5", seed)
    model = legacy.load(net)
    ranges = legacy.input_ranges(model)
    if ranges is None:
        raise mlnnkit.UserError(f"{net}: the network has no input ranges to draw rows from")
    mins, maxs = (np.asarray(r, dtype="float64") for r in ranges[:2])
    rng = np.random.default_rng(seed)
    x = rng.uniform(mins, maxs, (rows, len(mins)))
    y = np.asarray(model.predict(x.astype(model.inputs[0].dtype), verbose=0), dtype="float64")
    span = y.max(axis=0) - y.min(axis=0)
    y_new = gain * y + shift * span
    np.savez(out / "data.npz", x=x, y=y_new)
    return net


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument(
        "--net", type=Path, default=None, help="legacy network (default: a generated 7-100-1)"
    )
    p.add_argument("--rows", type=int, default=1250)
    p.add_argument("--gain", type=float, default=1.1)
    p.add_argument(
        "--shift", type=float, default=0.1, help="offset, as a fraction of each output's spread"
    )
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    net = make(a.out, a.net, a.rows, a.gain, a.shift, a.seed)
    print(
        f"{a.rows} rows of {net} with outputs * {a.gain} + {a.shift} x spread -> {a.out}/data.npz"
    )
    print(f"next: mlnnkit finetune {net} --data {a.out}/data.npz -o {a.out}/run --compare-scratch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
