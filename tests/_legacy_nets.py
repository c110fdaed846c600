"""Generate legacy network files for tests, written by hand from FORMATS.md's layouts
(h5py and plain text, not mlnnkit's writers), and the formats' math written out again
(plain loops over FORMATS.md's formulas, not mlnnkit's reference)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import h5py
import numpy as np


def random_net(sizes, seed=0, scale=0.5):
    """Weights (out, in) and biases for planes ``sizes``, small enough to stay unsaturated."""
    rng = np.random.default_rng(seed)
    ws = [rng.normal(0, scale / math.sqrt(a), (b, a)) for a, b in itertools.pairwise(sizes)]
    bs = [rng.normal(0, 0.1, b) for b in sizes[1:]]
    return ws, bs


def random_ranges(n, seed=0):
    rng = np.random.default_rng(seed + 100)
    lo = rng.uniform(-50, 50, n)
    return lo, lo + rng.uniform(0.5, 100, n)


def write_ocsmart(path, sizes, seed=0, *, mutate=None):
    """An OC-SMART MLNN HDF5 file; ``mutate(dict)`` may edit the arrays before writing
    (values None are left out)."""
    ws, bs = random_net(sizes, seed)
    lo_in, hi_in = random_ranges(sizes[0], seed)
    lo_out, hi_out = random_ranges(sizes[-1], seed + 1)
    data = {
        "Layers": np.asarray(sizes, dtype=np.int16),
        "Norm_in": np.stack([lo_in, hi_in], axis=1),
        "Norm_out": np.stack([lo_out, hi_out], axis=1),
    }
    for k, (w, b) in enumerate(zip(ws, bs), start=1):
        data[f"Weights/Layer{k}"] = w
        data[f"Bias/Layer{k}"] = b.reshape(-1, 1)
    if mutate:
        mutate(data)
    with h5py.File(path, "w") as f:
        for name, arr in data.items():
            if arr is not None:
                f.create_dataset(name, data=arr)
    return data


def ocsmart_forward(data, x):
    """FORMATS.md's OC-SMART math, one row at a time."""
    sizes = [int(s) for s in data["Layers"]]
    nin, nout = data["Norm_in"], data["Norm_out"]
    out = []
    for row in np.asarray(x, dtype=np.float64):
        a = [2 * (row[i] - nin[i, 0]) / (nin[i, 1] - nin[i, 0]) - 1 for i in range(sizes[0])]
        for k in range(1, len(sizes)):
            w, b = data[f"Weights/Layer{k}"], data[f"Bias/Layer{k}"]
            z = [sum(w[j, i] * a[i] for i in range(len(a))) + b[j, 0] for j in range(sizes[k])]
            a = [math.tanh(v) for v in z] if k < len(sizes) - 1 else z
        out.append([(a[j] + 1) / 2 * (nout[j, 1] - nout[j, 0]) + nout[j, 0] for j in range(len(a))])
    return np.asarray(out)


def ffbp_text(sizes, seed=0, *, names=True, trailing_newline=True):
    """An ffbp .net file's text; returns (text, weights, biases, (lo_in, hi_in), (lo_out, hi_out))."""
    ws, bs = random_net(sizes, seed, scale=2.0)
    lo_in, hi_in = random_ranges(sizes[0], seed)
    lo_out, hi_out = random_ranges(sizes[-1], seed + 1)
    lines = ["problem: /data/test/generated", "saved at Mon Jan  1 00:00:00 2024", ""]
    lines.append(f"the net has {sizes[0]} inputs:")
    if names:
        lines += [
            f"input {i + 1:2d} is in_{i} var in [{lo_in[i]:f},{hi_in[i]:f}]"
            for i in range(sizes[0])
        ]
    lines.append(f"the net has {sizes[-1]} outputs:")
    if names:
        lines += [
            f"output {i + 1:2d} is out_{i} in [{lo_out[i]:f},{hi_out[i]:f}]"
            for i in range(sizes[-1])
        ]
    lines += ["", "ranges repeated for easier input", "#", str(sizes[0])]
    lines += [f"{float(a)!r} {float(b)!r}" for a, b in zip(lo_in, hi_in)]
    lines += [str(sizes[-1])]
    lines += [f"{float(a)!r} {float(b)!r}" for a, b in zip(lo_out, hi_out)]
    lines += ["$", f"#planes={len(sizes)} " + " ".join(map(str, sizes))]
    for k, b in enumerate(bs, start=1):
        lines.append(f"bias {k} {sizes[k]}")
        lines += [repr(float(v)) for v in b]
    for k, w in enumerate(ws):
        lines.append(f"wgt {k} {sizes[k]} {sizes[k + 1]}")
        # wgt[k][to][from] row-major: all `from` values of the first `to` neuron first
        lines += [repr(float(w[to, fr])) for to in range(sizes[k + 1]) for fr in range(sizes[k])]
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    return text, ws, bs, (lo_in, hi_in), (lo_out, hi_out)


def ffbp_forward(ws, bs, rin, rout, x):
    """FORMATS.md's ffbp math (exact sigmoid), one row at a time."""
    out = []
    for row in np.asarray(x, dtype=np.float64):
        a = [(row[i] - rin[0][i]) / (rin[1][i] - rin[0][i]) for i in range(len(row))]
        for w, b in zip(ws, bs):
            a = [
                1 / (1 + math.exp(-(b[j] + sum(w[j, i] * a[i] for i in range(len(a))))))
                for j in range(len(b))
            ]
        out.append([a[j] * (rout[1][j] - rout[0][j]) + rout[0][j] for j in range(len(a))])
    return np.asarray(out)


def write_ffbp(path, sizes, seed=0, **kw):
    text, *rest = ffbp_text(sizes, seed, **kw)
    Path(path).write_text(text)
    return rest


def inputs_within(lo, hi, n, seed=0):
    rng = np.random.default_rng(seed + 7)
    return lo + rng.random((n, len(lo))) * (hi - lo)
