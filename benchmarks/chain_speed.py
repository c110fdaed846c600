"""An OC-SMART-style chain over millions of pixels: mlnnkit's one compiled program vs
OC-SMART's way (float64 NumPy, one network after the other), side by side in one run.

The chain (OC-SMART's water part for PACE):

  scope   PACE_Lrc_aaNN  (the real ../shared/fixtures/ocsmart/PACE_Lrc_aaNN.H5, imported
                          --physical: solz, senz, relaz, Lrc_1..107, rh -> Lrc_1..107)
  step 1  PACE_Lrc_rrsNN (generated: solz, senz, relaz, Lrc_1..107 -> Rrs_1..107)
  step 2  PACE_aphNN, PACE_adgNN, PACE_bbpNN (generated: Rrs_1..107 -> aph_/adg_/bbp_1..107)

The generated networks have OC-SMART's structure (min-max to [-1, 1], tanh hidden
layers, linear output, min-max back; log10/cos inputs, 10** outputs) with random weights:
rrsNN 110-150-150-107 and IOP nets 107-100-100-107 (the real files' hidden sizes are not
public here; these are of the same order as the aaNN's 111-111-57-111-107). They are
written as OC-SMART HDF5 files with the families' file names and imported like real ones.

OC-SMART's way, in float64 NumPy, block by block, with the steps of OC-SMART's
``src/mlnn.py`` (written here from its description, not copied): per network, an input
array of ``cos(deg2rad(angle))`` and ``log10`` values, normalised column by column,
``tanh(W @ a + b)`` on the (features x pixels) transpose, the linear last layer,
denormalised column by column, ``10**``; the aaNN's ``ratio = mean_k |Lrc'_k / Lrc_k -
1|``; then the Rrs network and the three IOP networks on ``log10`` of its Rrs. mlnnkit's way: ``mlnnkit.predict_array(chain, x, flags=True)`` (the
five networks, ``scope_error`` and the flags in one compiled program). Both run on the
same blocks of ``--block`` rows (memory stays bounded: 2,000,000 rows x 429 outputs
would be 7 GB in float64), alternating, so load from other processes hits both alike;
each writes a block's outputs into its own buffer, reused from block to block (as a
processor writing a scene block by block does). mlnnkit also runs every block into a new
array (``predict_array``'s default), timed apart: the rate a caller keeping every result
in memory sees, page faults of fresh memory included.
Printed: rows/s of each, the ratio, the max relative difference of the outputs, the max
absolute difference of ``scope_error`` (OC-SMART's ratio) and the share of pixels whose
out-of-scope decision (ratio > 0.07) agrees.

    PYTHONPATH=src python benchmarks/chain_speed.py [--rows 2000000] [--block 200000] [--json out.json]
    PYTHONPATH=src python benchmarks/chain_speed.py --write-networks nets/   # the generated files
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import functools
import itertools

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURE = (
    Path(os.environ.get("MLNNKIT_SHARED", REPO.parent / "shared"))
    / "fixtures"
    / "ocsmart"
    / "PACE_Lrc_aaNN.H5"
)
N_BANDS = 107
THRESHOLD = 0.07


# ----------------------------------------------------------- the generated networks


def generated_spec(sizes, in_min, in_max, out_min, out_max, seed):
    """An OC-SMART-structured network (tanh hidden layers, linear output) with random
    weights scaled so that the outputs cover their range without saturating."""
    from mlnnkit.legacy.spec import NetworkSpec, Scaling

    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for i, o in itertools.pairwise(sizes):
        weights.append(rng.normal(0.0, 1.0 / np.sqrt(i), size=(o, i)))
        biases.append(rng.normal(0.0, 0.1, size=o))
    acts = ["tanh"] * (len(sizes) - 2) + ["linear"]
    return NetworkSpec(
        weights, biases, acts,
        input_scaling=Scaling(np.asarray(in_min, float), np.asarray(in_max, float), (-1.0, 1.0)),
        output_scaling=Scaling(np.asarray(out_min, float), np.asarray(out_max, float), (-1.0, 1.0)),
        source_format="ocsmart",
    )  # fmt: skip


def build_specs(aann):
    """The rrsNN and the three IOP networks, ranges consistent with the aaNN's inputs."""
    lo, hi = aann.input_scaling.minimum, aann.input_scaling.maximum
    n_rrs_in = 3 + N_BANDS
    rrs_lo, rrs_hi = np.full(N_BANDS, -4.5), np.full(N_BANDS, -0.5)
    specs = {
        "PACE_Lrc_rrsNN.h5": generated_spec(
            [n_rrs_in, 150, 150, N_BANDS], lo[:n_rrs_in], hi[:n_rrs_in], rrs_lo, rrs_hi, 1
        )
    }
    for k, (fam, olo, ohi) in enumerate(
        (("aph", -4.0, 0.5), ("adg", -4.0, 1.0), ("bbp", -5.0, -0.5)), start=2
    ):
        specs[f"PACE_{fam}NN.h5"] = generated_spec(
            [N_BANDS, 100, 100, N_BANDS], rrs_lo, rrs_hi, np.full(N_BANDS, olo),
            np.full(N_BANDS, ohi), k,
        )  # fmt: skip
    return specs


def physical_model(path):
    """``mlnnkit import PATH --physical`` (the OC-SMART family from the file name)."""
    from mlnnkit import legacy

    return legacy.load(path, physical=True)


# --------------------------------------------------------------- OC-SMART's way


def np_net(spec, net_in):
    """One network the way OC-SMART's ``mlnn.py`` evaluates it, in float64: inputs
    normalised column by column (``2 * (x - min) / (max - min) - 1``), layers as
    ``tanh(W @ a + b)`` on the (features x pixels) transpose, the linear last layer,
    outputs denormalised column by column. ``net_in`` is modified in place."""
    s_in, s_out = spec.input_scaling, spec.output_scaling
    for i in range(net_in.shape[1]):
        net_in[:, i] = (
            2 * (net_in[:, i] - s_in.minimum[i]) / (s_in.maximum[i] - s_in.minimum[i]) - 1
        )
    a = net_in.transpose()
    n = len(spec.weights)
    for k, (w, b) in enumerate(zip(spec.weights, spec.biases)):
        a = np.matmul(w, a) + b.reshape(-1, 1)
        if k < n - 1:
            a = np.tanh(a)
    out = a.transpose()
    for i in range(out.shape[1]):
        out[:, i] = (out[:, i] + 1) / 2 * (s_out.maximum[i] - s_out.minimum[i]) + s_out.minimum[i]
    return out


def ocsmart_way(specs, aann, x, out=None):
    """OC-SMART's per-network computation of the chain on rows ``x`` (physical): each
    network builds its own input array (cosines, log10), runs, and gives ``10**`` of its
    outputs; the aaNN's ``ratio = mean |Lrc'/Lrc - 1|``; the IOP networks take log10 of
    the Rrs network's outputs. The outputs side by side go into ``out`` (float64, rows x
    429) when given, else into a new array."""
    x = np.asarray(x, np.float64)
    solz, senz, relaz, lrc, rh = x[:, 0], x[:, 1], x[:, 2], x[:, 3 : 3 + N_BANDS], x[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):

        def geometry_and_lrc(n_in):
            a = np.zeros((len(x), n_in))
            a[:, 0], a[:, 1], a[:, 2] = (np.cos(np.deg2rad(v)) for v in (solz, senz, relaz))
            a[:, 3 : 3 + N_BANDS] = np.log10(lrc)
            return a

        aa_in = geometry_and_lrc(3 + N_BANDS + 1)
        aa_in[:, -1] = np.log10(rh)
        rec = np.power(10, np_net(aann, aa_in))
        ratio = np.mean(np.absolute(rec / lrc - 1), axis=1)
        rrs = np.power(10, np_net(specs["PACE_Lrc_rrsNN.h5"], geometry_and_lrc(3 + N_BANDS)))
        iops = [np.power(10, np_net(specs[f"PACE_{f}NN.h5"], np.log10(rrs)))
                for f in ("aph", "adg", "bbp")]  # fmt: skip
    return np.concatenate([rrs, *iops, ratio[:, None]], axis=1, out=out)


# ------------------------------------------------------------------------ the scene


def scene(aann, rows, seed=0):
    """Physical pixels drawn over the aaNN's training box (and 2% beyond it), float32."""
    rng = np.random.default_rng(seed)
    lo, hi = aann.input_scaling.minimum, aann.input_scaling.maximum
    span = hi - lo
    out = np.empty((rows, len(lo)), np.float32)
    for i in range(0, rows, 500_000):
        n = min(500_000, rows - i)
        u = lo + rng.uniform(-0.02, 1.02, size=(n, len(lo))) * span
        ang = np.degrees(np.arccos(np.clip(u[:, :3], -1.0, 1.0)))
        out[i : i + n] = np.concatenate([ang, 10.0 ** u[:, 3:]], axis=1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--block", type=int, default=200_000, help="rows per side-by-side block")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--write-networks", type=Path, metavar="DIR",
                    help="only write the generated OC-SMART files (PACE_Lrc_rrsNN.h5, "
                    "PACE_aphNN.h5, ...) into DIR and stop")  # fmt: skip
    args = ap.parse_args()
    if not FIXTURE.is_file():
        print(f"{FIXTURE} not found (set MLNNKIT_SHARED)", file=sys.stderr)
        return 2

    import mlnnkit
    from mlnnkit import legacy
    from mlnnkit.retrieval import chain, flag_counts

    aann_spec = legacy.read(FIXTURE)
    specs = build_specs(aann_spec)
    if args.write_networks:
        args.write_networks.mkdir(parents=True, exist_ok=True)
        for name, spec in specs.items():
            legacy.write(spec, args.write_networks / name, format="ocsmart")
            print(f"wrote {args.write_networks / name} ({'-'.join(map(str, spec.sizes))})")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        steps = []
        for name, spec in specs.items():
            legacy.write(spec, Path(tmp) / name, format="ocsmart")
            steps.append(physical_model(Path(tmp) / name))
        scope = physical_model(FIXTURE)
    t0 = time.perf_counter()
    model = chain(steps, scope=scope, scope_metric="mean_rel", scope_threshold=THRESHOLD,
                  name="ocsmart_pace")  # fmt: skip
    x = scene(aann_spec, args.rows)
    # Half the pixels: spectra near the aaNN's manifold (reconstructed three times over,
    # then up to 20% noise), so the scope test has both answers.
    half = x[::2]
    for _ in range(3):
        half[:, 3 : 3 + N_BANDS] = mlnnkit.predict_array(scope, half)
    noise = np.random.default_rng(1).normal(size=(len(half), N_BANDS)).astype(np.float32)
    half[:, 3 : 3 + N_BANDS] *= np.exp(
        noise * np.linspace(0, 0.2, len(half), dtype=np.float32)[:, None]
    )
    x[::2] = half
    del half
    mlnnkit.predict_array(model, x[: args.block // 4], flags=True)  # compile (not timed)
    setup = time.perf_counter() - t0

    # Both ways write each block's outputs into a buffer kept from block to block, as a
    # processor writing a scene block by block does (and as ``mlnnkit predict`` does over
    # a file). A new array per block costs first-touch page faults on every block
    # (~0.1-0.5 s per 343 MB here, most of it the virtual machine backing fresh memory),
    # which is not the computation compared; mlnnkit's rate with a new array per block
    # is measured as well and printed beside it.
    y_buf = np.empty((args.block, model.outputs[0].shape[-1]), np.float32)
    f_buf = np.empty(args.block, np.uint8)
    ref_buf = np.empty(y_buf.shape, np.float64)
    t_np = t_ml = t_new = 0.0
    max_rel = max_scope = 0.0
    agree = rows_cmp = 0
    counts = None
    block_ratios: list[float] = []
    for i in range(0, args.rows, args.block):
        xb = x[i : i + args.block]
        n = len(xb)
        predict = functools.partial(mlnnkit.predict_array, model, xb, flags=True)
        reused = functools.partial(predict, out=(y_buf[:n], f_buf[:n]))
        new_arrays = predict
        # The two mlnnkit runs take turns going first, so neither always follows NumPy.
        first, last = (reused, new_arrays) if (i // args.block) % 2 == 0 else (new_arrays, reused)
        t = time.perf_counter()
        r_first = first()
        d_first = time.perf_counter() - t
        t = time.perf_counter()
        ref = ocsmart_way(specs, aann_spec, xb, out=ref_buf[:n])
        d_np = time.perf_counter() - t
        t = time.perf_counter()
        r_last = last()
        d_last = time.perf_counter() - t
        (y, f), (y_new, f_new) = (r_first, r_last) if first is reused else (r_last, r_first)
        d_ml, d_new = (d_first, d_last) if first is reused else (d_last, d_first)
        t_new += d_new
        same = np.array_equal(y_new, y, equal_nan=True) and np.array_equal(f_new, f)
        if not same:
            print("error: a new output array and the reused buffer disagree", file=sys.stderr)
            return 1
        del y_new, f_new, r_first, r_last
        t_ml, t_np = t_ml + d_ml, t_np + d_np
        block_ratios.append(d_np / d_ml)
        ok = np.isfinite(ref).all(axis=1)
        rel = np.abs(y[ok, :-1] - ref[ok, :-1]) / np.abs(ref[ok, :-1])
        max_rel = max(max_rel, float(rel.max(initial=0.0)))
        max_scope = max(max_scope, float(np.abs(y[ok, -1] - ref[ok, -1]).max(initial=0.0)))
        agree += int(np.sum(((f[ok] & 8) > 0) == (ref[ok, -1] > THRESHOLD)))
        rows_cmp += int(ok.sum())
        c = flag_counts(f)
        counts = c if counts is None else {k: counts[k] + c[k] for k in c}
    res = {
        "rows": args.rows,
        "numpy_float64_rows_per_s": args.rows / t_np,
        "mlnnkit_rows_per_s": args.rows / t_ml,
        "ratio": t_np / t_ml,
        "mlnnkit_new_arrays_rows_per_s": args.rows / t_new,
        "ratio_new_arrays": t_np / t_new,
        "block_ratios": block_ratios,
        "max_rel_diff_outputs": max_rel,
        "max_abs_diff_scope_error": max_scope,
        "out_of_scope_agreement": agree / max(rows_cmp, 1),
        "flag_counts": counts,
        "setup_and_compile_s": setup,
        "load_average": os.getloadavg()[0],
    }
    print(f"chain: {' -> '.join(s['name'] for s in mlnnkit.retrieval.chain_info(model)['steps'])}")
    print(f"rows: {args.rows:,} (blocks of {args.block:,}); load average {res['load_average']:.1f}")
    print(f"OC-SMART's way (float64 NumPy): {res['numpy_float64_rows_per_s']:>12,.0f} rows/s")
    print(f"mlnnkit (one program, flags):   {res['mlnnkit_rows_per_s']:>12,.0f} rows/s")
    print(
        f"ratio: {res['ratio']:.1f}x (total times; block by block: "
        f"{min(block_ratios):.1f}x to {max(block_ratios):.1f}x, median "
        f"{float(np.median(block_ratios)):.1f}x)"
    )
    print(
        f"mlnnkit, a new output array per block: {res['mlnnkit_new_arrays_rows_per_s']:>7,.0f} "
        f"rows/s, ratio {res['ratio_new_arrays']:.1f}x (same values)"
    )
    print(f"max relative difference of the outputs: {max_rel:.2e}")
    print(f"max absolute difference of scope_error vs OC-SMART's ratio: {max_scope:.2e}")
    print(f"out-of-scope decisions agreeing: {100 * res['out_of_scope_agreement']:.4f}%")
    print("flags: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
