"""Two generated NetCDF scenes (200 x 300 pixels) for docs/retrievals.md ("Flags and
chains"): olci_scene.nc (the inputs of C2RCC's olci_rtosa_aann and olci_rw_iop) and
pace_scene.nc (the inputs of OC-SMART's PACE aaNN), written in the current folder.

    python examples/chains/make_scenes.py [FIXTURES_DIR]   # default ../shared/fixtures
"""

import os
import sys

import numpy as np
import xarray as xr

from mlnnkit import legacy
from mlnnkit.legacy.reference import forward

FX = (
    sys.argv[1]
    if len(sys.argv) > 1
    else os.path.join(
        os.environ.get(
            "MLNNKIT_SHARED", os.path.join(os.path.dirname(__file__), "../../../shared")
        ),
        "fixtures",
    )
)
rng = np.random.default_rng(42)
shape = (200, 300)
n = shape[0] * shape[1]


def box(spec, beyond=0.0):
    lo, hi = spec.input_scaling.minimum, spec.input_scaling.maximum
    return lo + rng.uniform(-beyond, 1 + beyond, (n, len(lo))) * (hi - lo)


# OLCI (C2RCC): rtosa on the rtosa aann's manifold, with noise; rw over the IOP net's box.
aann = legacy.read(f"{FX}/c2rcc/olci_rtosa_aann_31x7x31_1159.4.net")
iop = legacy.read(f"{FX}/c2rcc/olci_rw_iop_37x37x37_596495.4.net")
a, w = box(aann), box(iop, 0.02)
for _ in range(8):
    a[:, 7:] = forward(aann, a)
a[:, 7:] += rng.normal(size=(n, 16)) * np.linspace(0, 0.05, n)[:, None]
v = {}
for names, net in ((aann.input_names, a), (iop.input_names, w)):
    for j, nm in enumerate(names):
        phys = nm.removeprefix("log_")
        v.setdefault(phys, np.exp(net[:, j]) if nm.startswith("log_") else net[:, j])
v["rw_560"][:500] = 0.0  # a few pixels with a zero reflectance
ds = xr.Dataset(
    {k: (("line", "pixel"), val.reshape(shape).astype("float32")) for k, val in v.items()}
)
ds["rtosa_865"][0, :20] = np.nan  # masked pixels
ds.to_netcdf("olci_scene.nc")

# PACE (OC-SMART): Lrc near the aaNN's manifold, with noise.
pace = legacy.read(f"{FX}/ocsmart/PACE_Lrc_aaNN.H5")
p = box(pace)
p[:, :3] = box(pace)[:, :3] * 0.999
for _ in range(3):
    p[:, 3:110] = forward(pace, p)
lrc = 10 ** p[:, 3:110] * np.exp(rng.normal(size=(n, 107)) * np.linspace(0, 0.15, n)[:, None])
data = {
    "solz": np.degrees(np.arccos(p[:, 0])),
    "senz": np.degrees(np.arccos(p[:, 1])),
    "relaz": np.degrees(np.arccos(p[:, 2])),
}
data.update({f"Lrc_{k + 1}": lrc[:, k] for k in range(107)})
data["rh"] = 10 ** p[:, 110]
ds = xr.Dataset(
    {k: (("line", "pixel"), val.reshape(shape).astype("float32")) for k, val in data.items()}
)
ds.to_netcdf("pace_scene.nc")
