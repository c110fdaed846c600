"""Every bad input gives exit 2, one line naming the file and the dataset or line at
fault, and leaves no output file behind."""

from __future__ import annotations

import numpy as np
import pytest
from _legacy_nets import ffbp_text, write_ocsmart

SIZES = [4, 6, 3]


def _run_import(cli, tmp_path, src, *extra):
    out = tmp_path / "out.keras"
    code, stdout, err = cli("import", src, "-o", out, "--samples", "50", *extra)
    assert not out.exists(), "a failed import left its output behind"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    return code, stdout, err


def _expect_user_error(cli, tmp_path, src, *needles, extra=()):
    code, _, err = _run_import(cli, tmp_path, src, *extra)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert str(src) in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


# ---- OC-SMART HDF5 -----------------------------------------------------------------


def _drop(name):
    return lambda d: d.__setitem__(name, None)


def _set(name, fn):
    return lambda d: d.__setitem__(name, fn(d[name]))


def _nan_at(a, idx, value=np.nan):
    a = a.copy()
    a[idx] = value
    return a


OCSMART_CASES = {
    "missing_bias": (_drop("Bias/Layer2"), ["'Bias/Layer2' not found"]),
    "missing_norm_in": (_drop("Norm_in"), ["'Norm_in' not found"]),
    "not_chaining": (
        _set("Weights/Layer2", lambda w: w[:, :5]),
        ["Weights/Layer2", "do not chain"],
    ),
    "bias_length": (
        _set("Bias/Layer1", lambda b: b[:5]),
        ["Bias/Layer1 has 5 values", "Weights/Layer1 has 6"],
    ),
    "layers_disagree": (
        _set("Layers", lambda _: np.array([4, 7, 3], np.int16)),
        ["'Layers' = [4, 7, 3] disagrees", "Weights/Layer1"],
    ),
    "layers_count": (
        _set("Layers", lambda _: np.array([4, 6, 3, 2], np.int16)),
        ["'Weights/Layer3' not found", "'Layers'"],
    ),
    "nan_weight": (
        _set("Weights/Layer2", lambda w: _nan_at(w, (1, 2))),
        ["Weights/Layer2 contains NaN at index [1, 2]"],
    ),
    "inf_bias": (
        _set("Bias/Layer1", lambda b: _nan_at(b, (3, 0), np.inf)),
        ["Bias/Layer1 contains Inf"],
    ),
    "inf_range": (
        _set("Norm_out", lambda a: _nan_at(a, (1, 1), np.inf)),
        ["Norm_out[1]", "non-finite range"],
    ),
    "nan_range": (
        _set("Norm_in", lambda a: _nan_at(a, (0, 0))),
        ["Norm_in[0]", "non-finite range"],
    ),
    "min_eq_max": (
        _set("Norm_in", lambda a: _nan_at(a, (2, 1), a[2, 0])),
        ["Norm_in[2]", "input 3", "min == max"],
    ),
    "norm_shape": (_set("Norm_in", lambda a: a.T), ["'Norm_in' has shape (2, 4)"]),
}


@pytest.mark.parametrize("case", list(OCSMART_CASES))
def test_bad_ocsmart_file(cli, tmp_path, case):
    mutate, needles = OCSMART_CASES[case]
    src = tmp_path / "bad.h5"
    write_ocsmart(src, SIZES, mutate=mutate)
    _expect_user_error(cli, tmp_path, src, *needles)


def test_truncated_hdf5(cli, tmp_path):
    src = tmp_path / "cut.h5"
    write_ocsmart(src, [7, 100, 1])
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    err = _expect_user_error(cli, tmp_path, src, extra=("--format", "ocsmart"))
    assert "truncated or corrupt" in err


def test_not_an_hdf5_file(cli, tmp_path):
    src = tmp_path / "text.h5"
    src.write_text("just some text\n")
    _expect_user_error(cli, tmp_path, src, "not an HDF5 file", extra=("--format", "ocsmart"))
    _expect_user_error(cli, tmp_path, src, "cannot tell the network format", "--format")


def test_missing_file(cli, tmp_path):
    _expect_user_error(cli, tmp_path, tmp_path / "nope.h5", "file not found")


# ---- rawh5 -------------------------------------------------------------------------


def test_rawh5_unknown_activation(cli, tmp_path):
    src = tmp_path / "raw.h5"
    write_ocsmart(src, SIZES, mutate=_drop("Layers"))
    err = _expect_user_error(
        cli,
        tmp_path,
        src,
        "unknown activation 'swish'",
        "linear, tanh, sigmoid, relu",
        extra=("--format", "rawh5", "--activations", "swish,linear"),
    )
    assert "activations" in err


def test_rawh5_missing_activations_and_pattern(cli, tmp_path):
    src = tmp_path / "raw.h5"
    write_ocsmart(src, SIZES, mutate=_drop("Layers"))
    _expect_user_error(cli, tmp_path, src, "--activations", extra=("--format", "rawh5"))
    _expect_user_error(
        cli,
        tmp_path,
        src,
        "no dataset matches",
        "'W{i}'",
        extra=("--format", "rawh5", "--weights", "W{i}", "--activations", "tanh,linear"),
    )


def test_rawh5_shapes_that_do_not_chain(cli, tmp_path):
    src = tmp_path / "raw.h5"
    write_ocsmart(
        src,
        SIZES,
        mutate=lambda d: (
            d.__setitem__("Layers", None),
            d.__setitem__("Weights/Layer2", d["Weights/Layer2"][:, :5]),
        ),
    )
    _expect_user_error(
        cli,
        tmp_path,
        src,
        "do not chain in either orientation",
        "Weights/Layer2 (3, 5)",
        extra=("--format", "rawh5", "--activations", "tanh,linear"),
    )


def test_rawh5_bias_of_wrong_length(cli, tmp_path):
    src = tmp_path / "raw.h5"
    write_ocsmart(
        src,
        SIZES,
        mutate=lambda d: (
            d.__setitem__("Layers", None),
            d.__setitem__("Bias/Layer2", d["Bias/Layer2"][:2]),
        ),
    )
    _expect_user_error(
        cli,
        tmp_path,
        src,
        "'Bias/Layer2' has 2 values",
        extra=("--format", "rawh5", "--activations", "tanh,linear", "--norm-in", "Norm_in"),
    )


# ---- ffbp .net ---------------------------------------------------------------------


def _net(tmp_path, edit):
    text = ffbp_text([4, 5, 3])[0]
    lines = text.splitlines()
    lines = edit(lines)
    src = tmp_path / "bad.net"
    src.write_text("\n".join(lines) if isinstance(lines, list) else lines)
    return src, text.splitlines()


def _line_of(lines, prefix):
    return next(i for i, ln in enumerate(lines) if ln.startswith(prefix))


def test_net_cut_short_inside_a_block(cli, tmp_path):
    src, lines = _net(tmp_path, lambda ls: ls[: _line_of(ls, "wgt 1") + 4])
    _expect_user_error(
        cli,
        tmp_path,
        src,
        f"file ends at line {_line_of(lines, 'wgt 1') + 4}",
        "wgt 1 value 4 of 15",
        "cut short",
    )


def test_net_cut_short_between_blocks(cli, tmp_path):
    src, _ = _net(tmp_path, lambda ls: ls[: _line_of(ls, "wgt 1")])
    _expect_user_error(cli, tmp_path, src, "no 'wgt 1 5 3' block", "cut short")


def test_net_cut_short_in_the_ranges(cli, tmp_path):
    src, _ = _net(tmp_path, lambda ls: ls[: _line_of(ls, "#") + 3])
    _expect_user_error(
        cli,
        tmp_path,
        src,
        "file ends at line 17 while reading the min of input 2",
        extra=("--format", "ffbp"),
    )


def test_net_bad_number(cli, tmp_path):
    def edit(ls):
        ls[_line_of(ls, "bias 2") + 2] = "0.12x"
        return ls

    src, lines = _net(tmp_path, edit)
    _expect_user_error(
        cli, tmp_path, src, f"line {_line_of(lines, 'bias 2') + 3}: expected a number", "'0.12x'"
    )


def test_net_nan_weight(cli, tmp_path):
    def edit(ls):
        ls[_line_of(ls, "wgt 0") + 7] = "nan"
        return ls

    src, lines = _net(tmp_path, edit)
    _expect_user_error(
        cli, tmp_path, src, f"line {_line_of(lines, 'wgt 0') + 8}: wgt 0 value 7 of 20 is 'nan'"
    )


def test_net_bias_size_disagrees_with_planes(cli, tmp_path):
    def edit(ls):
        ls[_line_of(ls, "bias 1")] = "bias 1 6"
        return ls

    src, lines = _net(tmp_path, edit)
    _expect_user_error(
        cli,
        tmp_path,
        src,
        f"line {_line_of(lines, 'bias 1') + 1}: 'bias 1 6'",
        "plane 1 has 5 neurons",
    )


def test_net_weights_that_do_not_chain(cli, tmp_path):
    def edit(ls):
        ls[_line_of(ls, "wgt 1")] = "wgt 1 4 3"
        return ls

    src, _ = _net(tmp_path, edit)
    _expect_user_error(cli, tmp_path, src, "'wgt 1 4 3'", "do not chain")


def test_net_range_with_min_equal_max(cli, tmp_path):
    def edit(ls):
        i = _line_of(ls, "#") + 3
        ls[i] = "2.5 2.5"
        return ls

    src, lines = _net(tmp_path, edit)
    _expect_user_error(
        cli, tmp_path, src, f"line {_line_of(lines, '#') + 4}", "input 2", "min == max"
    )


def test_net_planes_disagree_with_the_ranges(cli, tmp_path):
    def edit(ls):
        ls[_line_of(ls, "#planes")] = "#planes=3 5 5 3"
        return ls

    src, _ = _net(tmp_path, edit)
    _expect_user_error(cli, tmp_path, src, "#planes gives 5 inputs but the ranges block", "lists 4")


def test_text_that_is_not_a_net(cli, tmp_path):
    src = tmp_path / "notes.net"
    src.write_text("problem: nothing here\nno ranges\n")
    _expect_user_error(cli, tmp_path, src, "no '#' character", extra=("--format", "ffbp"))


def test_inspect_reports_the_same_errors(cli, tmp_path):
    src, _ = _net(tmp_path, lambda ls: ls[: _line_of(ls, "wgt 1") + 4])
    code, out, err = cli("inspect", src)
    assert code == 2 and err.count("\n") == 1 and "cut short" in err and out == ""


def test_rawh5_options_are_refused_for_other_formats(cli, tmp_path):
    src = tmp_path / "ok.h5"
    write_ocsmart(src, SIZES)
    _expect_user_error(
        cli, tmp_path, src, "apply to --format rawh5 only", extra=("--weights", "W{i}")
    )


def test_import_refuses_a_legacy_output_suffix(cli, tmp_path):
    src = tmp_path / "ok.h5"
    write_ocsmart(src, SIZES)
    code, _, err = cli("import", src, "-o", tmp_path / "x.net")
    assert code == 2 and "mlnnkit export" in err and not (tmp_path / "x.net").exists()
