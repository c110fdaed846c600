"""Fine-tuning in physical units: matchups whose concentrations are systematically shifted.

Takes a legacy retrieval network whose family mlnnkit recognises (C2RCC's
``olci_rw_iop_37x37x37_596495.4.net`` by default, or an OC-SMART ``S_aphNN.h5`` ...),
imports it with ``--physical`` (float64), draws input rows inside the network's ranges
and maps them to physical values (angles in degrees, reflectances), computes the network's
physical outputs (IOPs, concentrations) and shifts them the way a regional data set or a
new sensor does, multiplicatively and with a slope in log space:

    log10(y') = log10(y) + log10(gain) + slope * (log10(y) - mean log10(y)) + noise

(noise: normal, ``--noise`` in log10 units; outputs without a log transform get
``y' = gain * y``). Writes ``OUT/matchups.csv``: the physical inputs under the model's
physical names, and the shifted targets under its output names.

Usage:
    python examples/finetune_physical/make_data.py OUT [--net FILE] [--rows 1250]
    mlnnkit finetune FILE --physical --data OUT/matchups.csv --targets apig,adet,agelb,bpart,bwit \
        -o OUT/run --compare-scratch
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DEFAULT_NET = Path(__file__).resolve().parents[2].parent / (
    "shared/fixtures/c2rcc/olci_rw_iop_37x37x37_596495.4.net"
)


def make(
    out: Path,
    net: Path,
    rows: int = 1250,
    gain: float = 1.6,
    slope: float = 0.15,
    noise: float = 0.02,
    seed: int = 0,
) -> Path:
    """Write ``out/matchups.csv``; returns its path."""
    import pandas as pd

    import mlnnkit
    from mlnnkit import legacy
    from mlnnkit.layers import transform_numpy

    out.mkdir(parents=True, exist_ok=True)
    model = legacy.load(net, physical=True, dtype="float64", samples=500)
    t_in = model.get_layer("input_transform")
    t_out = model.get_layer("output_transform")
    scaling = model.get_layer("input_scaling")
    lo, hi = np.asarray(scaling.minimum), np.asarray(scaling.maximum)
    rng = np.random.default_rng(seed)
    x_net = lo + rng.uniform(0.02, 0.98, (rows, len(lo))) * (hi - lo)
    x = np.stack(
        [transform_numpy(t, x_net[:, j], inverse=True) for j, t in enumerate(t_in.transforms)],
        axis=1,
    )
    y = np.asarray(model(x), dtype=np.float64)
    y_new = y.copy()
    for j, t in enumerate(t_out.transforms):
        if t == "identity":
            y_new[:, j] = gain * y[:, j]
            continue
        ly = np.log10(y[:, j])
        y_new[:, j] = 10 ** (
            ly + np.log10(gain) + slope * (ly - ly.mean()) + rng.normal(0, noise, rows)
        )
    ins, outs = mlnnkit.io_names(model)
    table = pd.DataFrame(np.concatenate([x, y_new], axis=1), columns=[*ins, *outs])
    path = out / "matchups.csv"
    table.to_csv(path, index=False, float_format="%.9g")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--net", type=Path, default=DEFAULT_NET, help="legacy network file")
    p.add_argument("--rows", type=int, default=1250)
    p.add_argument("--gain", type=float, default=1.6, help="multiplicative shift")
    p.add_argument("--slope", type=float, default=0.15, help="extra slope in log10 space")
    p.add_argument("--noise", type=float, default=0.02, help="noise sd in log10 units")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    path = make(a.out, a.net, a.rows, a.gain, a.slope, a.noise, a.seed)
    print(f"{a.rows} physical matchups of {a.net.name} (x{a.gain}, slope {a.slope}) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
