"""`mlnnkit predict` of imported legacy networks against the file's own float64 math
(issue 3, item 6): 10,000 rows, max error <= 1e-5 of each output's range; input and output
names taken from the model when the file has them."""

from __future__ import annotations

import numpy as np
import pytest

PACE = "ocsmart/PACE_Lrc_aaNN.H5"
IOP = "c2rcc/olci_rw_iop_37x37x37_596495.4.net"
MERIS = "c2rcc/meris_c2x_nn4snap_meris_hitsm_20151128_rtosa_rw_17x27x27x17_677356.6.net"


def inputs_for(spec, n=10_000, seed=0):
    from mlnnkit.legacy.reference import sample_inputs

    return sample_inputs(spec.input_scaling.minimum, spec.input_scaling.maximum, n, seed=seed)


def rel_error(y, ref, spec):
    span = spec.output_scaling.maximum - spec.output_scaling.minimum
    return float((np.abs(y - ref).max(axis=0) / span).max())


@pytest.mark.parametrize("name", [PACE, MERIS])
def test_npy_through_imported_network_matches_reference(tmp_path, cli, fixtures_dir, name):
    from mlnnkit import legacy
    from mlnnkit.legacy.reference import forward

    path = fixtures_dir / name
    code, _out, err = cli("import", path, "-o", tmp_path / "net.keras")
    assert code == 0, err
    spec = legacy.read(path)
    x = inputs_for(spec)
    x[17] = np.nan  # a masked row
    np.save(tmp_path / "x.npy", x)
    code, _out, err = cli("predict", tmp_path / "net.keras", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (10_000, len(spec.output_scaling))
    assert np.isnan(y[17]).all() and not np.isnan(np.delete(y, 17, axis=0)).any()
    ok = np.arange(10_000) != 17
    assert rel_error(y[ok], forward(spec, x[ok]), spec) <= 1e-5
    if name == MERIS:  # imported in float64 (float32 cannot hold it to 1e-5): predicted so
        assert y.dtype == np.float64


def test_csv_columns_found_by_the_networks_input_names(tmp_path, cli, fixtures_dir):
    import pandas as pd

    from mlnnkit import legacy
    from mlnnkit.legacy.reference import forward

    path = fixtures_dir / IOP
    assert cli("import", path, "-o", tmp_path / "iop.keras")[0] == 0
    spec = legacy.read(path)
    x = inputs_for(spec)
    df = pd.DataFrame(x, columns=spec.input_names)
    df = df[list(reversed(spec.input_names))]  # another column order,
    df.insert(3, "quality_flag", 0)  # and a column the network does not use
    df.to_csv(tmp_path / "x.csv", index=False)
    code, _out, err = cli("predict", tmp_path / "iop.keras", tmp_path / "x.csv", "-o", tmp_path / "y.csv")
    assert code == 0, err
    y = pd.read_csv(tmp_path / "y.csv")
    assert list(y.columns) == spec.output_names  # the network's own output names
    assert rel_error(y.to_numpy(), forward(spec, x), spec) <= 1e-5


def test_legacy_file_as_model_is_refused_with_the_import_command(tmp_path, cli, fixtures_dir):
    np.save(tmp_path / "x.npy", np.zeros((3, 111)))
    code, _out, err = cli("predict", fixtures_dir / PACE, tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert code == 2 and "ocsmart network file" in err and "mlnnkit import" in err
    assert not (tmp_path / "y.npy").exists()
