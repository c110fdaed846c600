"""The ffbp reader against SNAP's reading rules (../shared/FORMATS.md), one crafted variant
of a real C2RCC fixture per rule: either the numbers SNAP computes from it (the original
file's, since each accepted variant spells the same numbers differently), or a one-line
refusal naming the line and saying what SNAP would do with it."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mlnnkit.errors import UserError
from mlnnkit.legacy import ffbp

FIXTURE = "msi_complex_20200321_rw_rwnorm_27x7x27_28.0.net"  # planes 11-27-7-27-6


@pytest.fixture(scope="module")
def original(fixtures_dir):
    path = fixtures_dir / "c2rcc" / FIXTURE
    return path.read_text().split("\n"), ffbp.read(path)


def _idx(lines, prefix):
    return next(i for i, ln in enumerate(lines) if ln.startswith(prefix))


def _write(tmp_path, lines, eol="\n"):
    p = tmp_path / "variant.net"
    p.write_bytes(eol.join(lines).encode())
    return p


def _same_numbers(a, b):
    assert a.sizes == b.sizes
    for x, y in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(x, y)
    for s, t in ((a.input_scaling, b.input_scaling), (a.output_scaling, b.output_scaling)):
        np.testing.assert_array_equal(s.minimum, t.minimum)
        np.testing.assert_array_equal(s.maximum, t.maximum)


def _refused(path, line, *needles):
    with pytest.raises(UserError) as e:
        ffbp.read(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: line {line}: "), msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    return msg


def _value_lines(lines):
    """Indices of the lines holding one bias or weight value."""
    start = _idx(lines, "bias 1 ")
    return [i for i in range(start, len(lines)) if lines[i] and not lines[i][0].isalpha()]


# ---- rules SNAP reads unambiguously: the same numbers --------------------------------


@pytest.mark.parametrize("sep", [",", ";", ":", "\t", " , ", "\t;\t"])
def test_separators_in_range_and_value_lines(tmp_path, original, sep):
    lines, spec = original
    lines = list(lines)
    h = _idx(lines, "#")
    for i in range(h + 2, h + 2 + 11):  # the input range lines: "min max" -> "min<sep>max"
        lines[i] = lines[i].replace(" ", sep)
    for i in _value_lines(lines)[::7]:  # a value, a separator, whatever follows is ignored
        lines[i] = lines[i] + sep + "x"
    _same_numbers(ffbp.read(_write(tmp_path, lines)), spec)


def test_trailing_text_after_a_number_is_ignored(tmp_path, original):
    lines, spec = original
    lines = list(lines)
    h = _idx(lines, "#")
    lines[h + 1] = "11 inputs"  # SNAP takes the first field of a count line
    for i in _value_lines(lines)[::5]:
        lines[i] += "   <- trained 2020"
    lines[_idx(lines, "#planes")] += "   "
    _same_numbers(ffbp.read(_write(tmp_path, lines)), spec)


def test_java_literal_suffixes_and_forms(tmp_path, original):
    lines, spec = original
    lines = list(lines)
    vals = _value_lines(lines)
    lines[vals[0]] += "d"  # -1.553252d
    lines[vals[1]] = "2f"
    lines[vals[2]] = "1e3D"
    lines[vals[3]] = "0x1.8p1"  # a hexadecimal literal: 3.0
    lines[vals[4]] = "+.5F"
    got = ffbp.read(_write(tmp_path, lines))
    want = spec.biases[0].copy()
    want[1:5] = [2.0, 1000.0, 3.0, 0.5]
    np.testing.assert_array_equal(got.biases[0], want)
    assert got.biases[0][0] == spec.biases[0][0]


@pytest.mark.parametrize("eol", ["\r\n", "\r"])
def test_crlf_and_cr_line_ends(tmp_path, original, eol):
    lines, spec = original
    got = ffbp.read(_write(tmp_path, lines, eol))
    _same_numbers(got, spec)
    assert got.header == spec.header and got.input_names == spec.input_names


def test_text_after_the_hash_that_ends_the_header_is_skipped(tmp_path, original):
    lines, spec = original
    lines = list(lines)
    lines[_idx(lines, "#")] = "# ranges follow: 11 inputs"  # SNAP skips the rest of that line
    _same_numbers(ffbp.read(_write(tmp_path, lines)), spec)


def test_no_newline_at_the_end(tmp_path, original):
    lines, spec = original
    p = tmp_path / "variant.net"
    p.write_text("\n".join(lines).rstrip("\n"))
    _same_numbers(ffbp.read(p), spec)


# ---- where SNAP fails too, or reading like SNAP would be a guess: one-line refusals ---


def test_hash_inside_the_free_text_header(tmp_path, original):
    lines = list(original[0])
    lines[0] = lines[0] + " #2"  # SNAP's header ends here; it reads line 2 as n_in
    p = _write(tmp_path, lines)
    _refused(p, 2, "expected an integer (the number of inputs)", "first '#' character", "line 1")


def test_hash_late_in_the_header(tmp_path, original):
    lines = list(original[0])
    h = _idx(lines, "#")
    lines[h - 1] = "ranges repeated # for easier input"
    # SNAP: header ends on line h; line h + 1 is the '#' line, read as the number of inputs.
    _refused(_write(tmp_path, lines), h + 1, "'#'", "Long.parseLong", "first '#' character")


def test_labels_that_disagree_with_the_order(tmp_path, original):
    lines = list(original[0])
    b1, b3 = _idx(lines, "bias 1 27"), _idx(lines, "bias 3 27")
    lines[b1], lines[b3] = "bias 3 27", "bias 1 27"  # same sizes: SNAP reads file order
    msg = _refused(_write(tmp_path, lines), b1 + 1, "'bias 3 27'", "file order", "'bias 1 27'")
    assert "skips label lines unread" in msg


def test_blocks_in_another_order_than_snap_takes_them(tmp_path, original):
    lines = list(original[0])
    w0, w1 = _idx(lines, "wgt 0 "), _idx(lines, "wgt 1 ")
    b = _idx(lines, "bias 1 ")
    # weights before biases: SNAP would read 'wgt 0 11 27' as 'bias 1 27'
    moved = lines[:b] + lines[w0:w1] + lines[b:w0] + lines[w1:]
    _refused(_write(tmp_path, moved), b + 1, "'wgt 0 11 27'", "file order")


def test_two_numbers_on_a_value_line(tmp_path, original):
    lines = list(original[0])
    i = _value_lines(lines)[10]
    lines[i] = f"{lines[i]} {lines[i + 1]}"
    _refused(_write(tmp_path, lines), i + 1, "two numbers on one line", "takes the first")


def test_two_numbers_on_a_count_line(tmp_path, original):
    lines = list(original[0])
    h = _idx(lines, "#")
    lines[h + 1] = "11 6"
    _refused(_write(tmp_path, lines), h + 2, "two numbers", "the number of inputs")


def test_blank_line_where_a_number_is_expected(tmp_path, original):
    lines = list(original[0])
    i = _value_lines(lines)[40]
    lines.insert(i, "")
    _refused(_write(tmp_path, lines), i + 1, "blank line", "SNAP's reader fails on it too")


def test_not_a_java_number(tmp_path, original):
    lines = list(original[0])
    vals = _value_lines(lines)
    for i, tok in ((vals[3], "1_0"), (vals[4], "0.5x"), (vals[5], "٣")):
        bad = list(lines)
        bad[i] = tok  # Python's float() takes "1_0" and "٣"; Java's Double.valueOf does not
        _refused(_write(tmp_path, bad), i + 1, f"found {tok!r}", "Double.valueOf")


@pytest.mark.parametrize("tok", ["NaN", "-Infinity", "nan", "inf", "1e400"])
def test_non_finite_values(tmp_path, original, tok):
    lines = list(original[0])
    i = _value_lines(lines)[6]
    lines[i] = tok
    _refused(_write(tmp_path, lines), i + 1, "not finite")


def test_a_range_line_that_is_not_min_max(tmp_path, original):
    lines = list(original[0])
    h = _idx(lines, "#")
    for extra in (" 5.0", " deg", ""):
        bad = list(lines)
        bad[h + 3] = bad[h + 3] + extra if extra else bad[h + 3].split()[0]
        _refused(_write(tmp_path, bad), h + 4, "the range of input 2", "'min max'")


def test_a_separator_before_the_number(tmp_path, original):
    lines = list(original[0])
    i = _value_lines(lines)[2]
    lines[i] = "," + lines[i]
    _refused(_write(tmp_path, lines), i + 1, "starts with a separator", "not pinned down")


def test_planes_line_that_disagrees_with_itself(tmp_path, original):
    lines = list(original[0])
    i = _idx(lines, "#planes")
    lines[i] = "#planes=5 11 27 7 27 6 9"
    _refused(_write(tmp_path, lines), i + 1, "announces 5 planes but lists 6 sizes")


def test_text_where_only_dollar_belongs(tmp_path, original):
    lines = list(original[0])
    i = _idx(lines, "$")
    lines.insert(i, "-1.0 1.0")  # an extra output range: SNAP would skip it to the '='
    msg = _refused(_write(tmp_path, lines), i + 1, "skips everything up to the first '='")
    assert re.search(r"range counts \(lines \d+ and \d+\)", msg)


def test_values_after_the_last_block(tmp_path, original):
    lines = list(original[0])
    lines = [ln for ln in lines if ln] + ["0.5", ""]
    _refused(_write(tmp_path, lines), len(lines) - 1, "after the last weight block", "ignore it")


def test_form_feed_is_not_a_line_end(tmp_path, original):
    # Python's splitlines() would split at \f; Java's readLine (SNAP) does not.
    lines = list(original[0])
    i = _value_lines(lines)[8]
    lines[i] = lines[i] + "\f" + lines[i + 1]
    del lines[i + 1]
    with pytest.raises(UserError, match=r"line \d+: "):
        ffbp.read(_write(tmp_path, lines))
