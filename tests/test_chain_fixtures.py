"""Chains of the real networks (#12), against the processors' own float64 arithmetic:
OC-SMART (PACE aaNN as scope, mean_rel, 0.07) and C2RCC (olci_rtosa_aann as scope,
sum_abs over the 779, 865, 885 and 1020 nm outputs, 0.01, then olci_rw_iop)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import mlnnkit
from mlnnkit import legacy
from mlnnkit.legacy.reference import forward
from mlnnkit.legacy.spec import NetworkSpec, Scaling
from mlnnkit.retrieval import chain, chain_info

N = 3000


def _net_rows(lo, hi, n, rng, beyond=0.0):
    u = rng.uniform(-beyond, 1 + beyond, size=(n, len(lo)))
    return lo + u * (hi - lo)


def _nan_if_not_finite(a):
    return np.where(np.isfinite(a), a, np.nan)


def _match_rate(got, want):
    return float(np.mean(got == want))


def _generated(n_in, n_out, in_lo, in_hi, seed):
    rng = np.random.default_rng(seed)
    sizes = [n_in, 40, n_out]
    ws = [rng.normal(0, 1 / np.sqrt(i), (o, i)) for i, o in itertools.pairwise(sizes)]
    bs = [rng.normal(0, 0.1, o) for o in sizes[1:]]
    return NetworkSpec(
        ws, bs, ["tanh", "linear"], Scaling(np.asarray(in_lo), np.asarray(in_hi), (-1.0, 1.0)),
        Scaling(np.full(n_out, -4.0), np.full(n_out, -1.0), (-1.0, 1.0)), source_format="ocsmart",
    )  # fmt: skip


@pytest.fixture(scope="module")
def ocsmart(fixtures_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ocsmart")
    aann_path = fixtures_dir / "ocsmart" / "PACE_Lrc_aaNN.H5"
    aann = legacy.read(aann_path)
    lo, hi = aann.input_scaling.minimum, aann.input_scaling.maximum
    rrs = _generated(110, 107, lo[:110], hi[:110], 1)
    aph = _generated(107, 107, np.full(107, -4.0), np.full(107, -1.0), 2)
    legacy.write(rrs, tmp / "PACE_Lrc_rrsNN.h5", format="ocsmart")
    legacy.write(aph, tmp / "PACE_aphNN.h5", format="ocsmart")
    models = {
        "aann": legacy.load(aann_path, physical=True),
        "rrs": legacy.load(tmp / "PACE_Lrc_rrsNN.h5", physical=True),
        "aph": legacy.load(tmp / "PACE_aphNN.h5", physical=True),
    }
    return aann, rrs, aph, models


def _ocsmart_scene(aann, models, rng):
    """Physical pixels: inside the training box, reconstructed spectra (near the aaNN's
    manifold), far from it (scaled), out of range, NaN, zero and negative reflectances."""
    lo, hi = aann.input_scaling.minimum, aann.input_scaling.maximum
    net = _net_rows(lo, hi, N, rng, beyond=0.03)
    net[:, :3] = _net_rows(lo[:3], hi[:3], N, rng) * 0.999  # cosines inside [-1, 1]
    x = np.concatenate([np.degrees(np.arccos(net[:, :3])), 10 ** net[:, 3:]], axis=1)
    x[::50, 0] = 80.0  # the sun lower than the training set's 75 degrees
    k = 2 * N // 3  # two thirds: spectra near the aaNN's manifold (reconstructed three
    for _ in range(3):  # times over), with noise growing to 20%
        net[:k, 3:110] = forward(aann, net[:k])
    noise = rng.normal(size=(k, 107)) * np.linspace(0, 0.2, k)[:, None]
    x[:k, 3:110] = 10 ** net[:k, 3:110] * np.exp(noise)
    x[k : k + 100, 3:110] *= 5.0  # far from the training set
    x[k + 100 : k + 110, 0] = np.nan
    x[k + 110 : k + 120, 5] = 0.0
    x[k + 120 : k + 130, 50] = -1e-3
    x[k + 130 : k + 140, 110] = np.inf
    return x.astype(np.float32)


def test_ocsmart_chain_matches_ocsmart(ocsmart):
    aann, rrs, aph, m = ocsmart
    model = chain(
        [m["rrs"], m["aph"]], scope=m["aann"], scope_metric="mean_rel", scope_threshold=0.07
    )
    info = chain_info(model)
    assert info["input_names"][:4] == ["solz", "senz", "relaz", "Lrc_1"]
    assert info["input_names"][-1] == "rh" and len(info["input_names"]) == 111
    x = _ocsmart_scene(aann, m, np.random.default_rng(0))
    y, flags = mlnnkit.predict_array(model, x, flags=True)

    # OC-SMART's own arithmetic, float64.
    xd = x.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ang = np.cos(np.radians(xd[:, :3]))
        log_lrc = np.log10(xd[:, 3:110])
        # a value that is not finite in the network's variables (log10 of 0 is -inf) is
        # invalid: NaN, never out of range (and never a saturated tanh)
        net_aa = _nan_if_not_finite(np.concatenate([ang, log_lrc, np.log10(xd[:, 110:])], axis=1))
        out_aa = forward(aann, net_aa)
        ratio = np.mean(np.abs(10**out_aa / xd[:, 3:110] - 1), axis=1)
        net_rrs = _nan_if_not_finite(np.concatenate([ang, log_lrc], axis=1))
        out_rrs = forward(rrs, net_rrs)
        out_aph = forward(aph, out_rrs)
    valid = np.isfinite(net_aa).all(axis=1)
    assert (~valid).sum() == 40
    # float32 arithmetic: 1e-5 absolute where the decision is made (ratio up to 1; the
    # scene's wildest random spectra reach ratios of ~25, where float32 gives ~1e-6 relative)
    near = valid & (ratio <= 1.0)
    assert near.sum() > N // 2
    np.testing.assert_allclose(y[near, -1], ratio[near], rtol=0, atol=1e-5)
    np.testing.assert_allclose(y[valid, -1], ratio[valid], rtol=2e-6, atol=1e-5)
    ref = np.concatenate([10**out_rrs, 10**out_aph], axis=1)
    np.testing.assert_allclose(y[valid, :-1], ref[valid], rtol=1e-5)
    assert np.isnan(y[~valid]).all()
    # the networks run one by one give the same numbers
    r = mlnnkit.predict_array(m["rrs"], x[:, :110])
    a = mlnnkit.predict_array(m["aph"], r)
    np.testing.assert_allclose(y[valid, :214], np.c_[r, a][valid], rtol=1e-5)

    # the flags: OC-SMART's out-of-scope decision and the bits' rules, in float64
    span = lambda s: (s.minimum, s.maximum)
    ilo, ihi = span(aann.input_scaling)
    rlo, rhi = span(rrs.input_scaling)
    alo, ahi = span(aph.input_scaling)
    oor_in = ((net_aa < ilo) | (net_aa > ihi)).any(1) | ((net_rrs < rlo) | (net_rrs > rhi)).any(1)
    oor_in |= ((out_rrs < alo) | (out_rrs > ahi)).any(1)
    outs = np.concatenate([out_rrs, out_aph], axis=1)
    olo = np.concatenate([rrs.output_scaling.minimum, aph.output_scaling.minimum])
    ohi = np.concatenate([rrs.output_scaling.maximum, aph.output_scaling.maximum])
    oor_out = ((outs < olo) | (outs > ohi)).any(1)
    at_lim = ((outs < olo + 0.02) | (outs > ohi - 0.02)).any(1)
    want = oor_in * 1 | oor_out * 2 | at_lim * 4 | (ratio > 0.07) * 8 | ~valid * 16
    want = want.astype(np.uint8)  # an invalid row keeps the bits its finite values set
    assert _match_rate((flags & 8)[valid] > 0, ratio[valid] > 0.07) >= 0.999
    assert _match_rate(flags, want) >= 0.999
    # the scene has every case
    for bit in (1, 2, 4, 8, 16):
        assert (flags & bit).any()
    assert 0.1 < np.mean((flags[: 2 * N // 3] & 8) > 0) < 0.9  # both answers near the manifold


C2RCC_OOS_BANDS = ["rtosa_779", "rtosa_865", "rtosa_885", "rtosa_1020"]


def test_c2rcc_chain_matches_c2rcc_rules(fixtures_dir):
    d = fixtures_dir / "c2rcc"
    aann_path = d / "olci_rtosa_aann_31x7x31_1159.4.net"
    iop_path = d / "olci_rw_iop_37x37x37_596495.4.net"
    aann, iop = legacy.read(aann_path), legacy.read(iop_path)
    m_aann = legacy.load(aann_path, physical=True)
    m_iop = legacy.load(iop_path, physical=True)
    model = chain([m_iop], scope=m_aann, scope_metric="sum_abs",
                  scope_variables=C2RCC_OOS_BANDS, scope_threshold=0.01)  # fmt: skip
    info = chain_info(model)
    assert info["scope"]["variables"] == C2RCC_OOS_BANDS
    names = info["input_names"]
    ain, _ = mlnnkit.io_names(m_aann)
    iin, iout = mlnnkit.io_names(m_iop)
    assert iout == ["apig", "adet", "agelb", "bpart", "bwit"]

    rng = np.random.default_rng(3)
    net_a = _net_rows(aann.input_scaling.minimum, aann.input_scaling.maximum, N, rng, 0.03)
    net_i = _net_rows(iop.input_scaling.minimum, iop.input_scaling.maximum, N, rng, 0.03)
    k = N // 2  # half: rtosa spectra on the aann's manifold (reconstructed over and over)
    for _ in range(8):
        net_a[:k, 7:] = forward(aann, net_a[:k])
    phys = {}
    for names_, net, spec in ((ain, net_a, aann), (iin, net_i, iop)):
        for j, (n, nn) in enumerate(zip(names_, spec.input_names)):
            v = np.exp(net[:, j]) if nn.startswith("log_") else net[:, j]
            phys.setdefault(n, v)  # shared names (sun_zenith, ...) from the aann's draw
    x = np.stack([phys[n] for n in names], axis=1).astype(np.float32)
    x[k : k + 10, names.index("rw_560")] = 0.0
    x[k + 10 : k + 20, names.index("pressure")] = np.nan
    y, flags = mlnnkit.predict_array(model, x, flags=True)

    # C2RCC's arithmetic and flag rules, float64, from the chain's own input columns
    xd = x.astype(np.float64)

    def net_in(spec, pnames):
        cols = [xd[:, names.index(n)] for n in pnames]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.stack([np.log(c) if nn.startswith("log_") else c
                             for c, nn in zip(cols, spec.input_names)], axis=1)  # fmt: skip

    a_in, i_in = _nan_if_not_finite(net_in(aann, ain)), _nan_if_not_finite(net_in(iop, iin))
    a_out, i_out = forward(aann, a_in), forward(iop, i_in)
    valid = np.isfinite(a_in).all(1) & np.isfinite(i_in).all(1)
    assert (~valid).sum() == 20
    aout_names = [n.removeprefix("log_") for n in aann.output_names]
    cols = [aout_names.index(b) for b in C2RCC_OOS_BANDS]
    assert cols == [12, 13, 14, 15]  # outputs 13-16
    rtosa = np.stack([xd[:, names.index(b)] for b in C2RCC_OOS_BANDS], axis=1)
    oos_err = np.sum(np.abs(rtosa - np.exp(a_out[:, cols])), axis=1)
    np.testing.assert_allclose(y[valid, -1], oos_err[valid], rtol=1e-4, atol=1e-5)
    # against float64: verify's tolerance, 1e-5 of each output's range in the network's
    # (log) space (float32 cannot do 1e-5 relative on this network's ~13-wide log ranges)
    span = iop.output_scaling.maximum - iop.output_scaling.minimum
    assert (np.abs(np.log(y[valid, :5]) - i_out[valid]) <= 1e-5 * span).all()
    one = mlnnkit.predict_array(m_iop, x[:, [names.index(n) for n in iin]])
    np.testing.assert_allclose(y[valid, :5], one[valid], rtol=1e-5)

    s_a, s_i, s_o = aann.input_scaling, iop.input_scaling, iop.output_scaling
    rtosa_oor = ((a_in < s_a.minimum) | (a_in > s_a.maximum)).any(1)
    rhow_oor = ((i_in < s_i.minimum) | (i_in > s_i.maximum)).any(1)
    iop_oor = ((i_out < s_o.minimum) | (i_out > s_o.maximum)).any(1)
    at_limit = ((i_out > s_o.maximum - 0.02) | (i_out < s_o.minimum + 0.02)).any(1)
    rtosa_oos = oos_err > 0.01
    want = (
        (rtosa_oor | rhow_oor) * 1 | iop_oor * 2 | at_limit * 4 | rtosa_oos * 8 | ~valid * 16
    ).astype(np.uint8)
    assert _match_rate(flags, want) >= 0.999
    assert 0.05 < np.mean((flags[valid] & 8) > 0) < 0.95  # both sides of the scope test
    for bit in (1, 8, 16):
        assert (flags & bit).any()
