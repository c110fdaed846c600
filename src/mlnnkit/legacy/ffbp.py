# Over 400 lines: one file format; its reader and writer stay side by side so they cannot drift.
"""ffbp ``.net`` text (GKSS "ffbp1.0", the C2RCC networks in SNAP): read and write.

Layout (see FORMATS.md): a free-text header (``problem:``, ``saved at``, training
errors, ``input  1 is sun_zenith in [a,b]`` per variable), a line ``#``, ``n_in`` and
``n_in`` lines ``min max``, ``n_out`` and ``n_out`` lines ``min max``, a line ``$``,
``#planes=P s0 ... s(P-1)``, then ``bias k s_k`` blocks (k = 1..P-1) and
``wgt k s_k s_(k+1)`` blocks (k = 0..P-2) whose numbers run over ``wgt[k][to][from]``
row-major, so ``W_k`` has shape ``(s_(k+1), s_k)``. Math: inputs scaled to [0, 1], the
logistic sigmoid on every plane including the output, outputs scaled back from [0, 1].

SNAP's reader finds the ``#`` that ends the header as the first ``#`` character of the
file, so :func:`write` keeps ``#`` out of the header text.

Example:
    >>> spec = read("olci_rw_iop_37x37x37_596495.4.net")
    >>> spec.sizes, spec.input_names[:2]
    ([17, 37, 37, 37, 5], ['sun_zenith', 'view_zenith'])
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from mlnnkit.errors import UserError
from mlnnkit.legacy.spec import MAX_RANGE, MAX_WEIGHT, NetworkSpec, Scaling

NAME = "ffbp"
DESCRIPTION = "ffbp .net text (C2RCC / SNAP)"
TARGET = (0.0, 1.0)

_NAME_LINE = re.compile(r"^\s*(input|output)\s+(\d+)\s+is\s+(.+?)\s+in\s+\[", re.IGNORECASE)


def looks_like(head: str) -> bool:
    """True when the start of a text file looks like an ffbp net."""
    return "#planes=" in head or ("problem:" in head and "\n#" in head)


# How SNAP's reader (NNffbpAlphaTabFast, FormattedStringReader) sees a line: Java's
# readLine ends lines at \r\n, \r or \n only (not at \f, \x1c..\x1e, \x85 or U+2028 as
# Python's splitlines does); String.trim() removes every character <= ' ' at both ends.
_EOL = re.compile(r"\r\n|\r|\n")
_JAVA_TRIM = "".join(chr(i) for i in range(33))
# Separators: space, tab, ',', ';', ':'. A run of blanks is one separator, and so is one
# punctuation character with blanks around it; two punctuation characters in a row (or
# one at the start) make an empty field, where a tokenizer and a split disagree.
_SEP = re.compile(r"[ \t]*[,;:][ \t]*|[ \t]+")
# Java's Double.valueOf literals (FloatValue of its grammar): decimal or hexadecimal,
# optional exponent, optional type suffix f/F/d/D (ignored: "2f" reads as the double 2.0),
# NaN and Infinity (refused below as not finite). Long.parseLong: optional sign, digits.
_JAVA_DOUBLE = re.compile(
    r"[+-]?(?:NaN|Infinity|(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+)[fFdD]?)"
)
_JAVA_LONG = re.compile(r"[+-]?[0-9]+")
_NON_FINITE = re.compile(r"[+-]?(nan|inf|infinity)[fd]?", re.IGNORECASE)
# Plane sizes above this are not a retrieval network (and would make SNAP allocate
# gigabytes); a damaged '#planes' line is refused before reading anything else.
_MAX_PLANE = 1_000_000


def java_double(token: str) -> float | None:
    """The value Java's ``Double.valueOf`` gives ``token``, or None if it throws.

    Example:
        >>> java_double("1e3D"), java_double("2f"), java_double("0x1.8p1"), java_double("1_0")
        (1000.0, 2.0, 3.0, None)
    """
    if not _JAVA_DOUBLE.fullmatch(token):
        return None
    # A last f/F/d/D is the type suffix (hex literals end with their decimal exponent).
    body = token[:-1] if token[-1] in "fFdD" else token
    if "x" in body or "X" in body:
        return float.fromhex(body)
    return float(body.replace("Infinity", "inf"))


def _fields(line: str) -> list[str]:
    body = line.strip(_JAVA_TRIM)
    return _SEP.split(body) if body else []


class _Lines:
    """The file's lines as SNAP reads them, one at a time, with their numbers."""

    def __init__(self, lines: list[str], start: int, path: str, header_note: str) -> None:
        self.lines = lines
        self.i = start  # index of the next line to read
        self.path = path
        self.header_note = header_note  # said when the first number fails (a '#' in the header)
        self.first = start

    @property
    def line(self) -> int:
        """1-based number of the line read last."""
        return self.i

    def fail(self, msg: str) -> None:
        note = self.header_note if self.i == self.first + 1 else ""
        raise UserError(f"{self.path}: line {self.i}: {msg}{note}")

    def next(self, what: str) -> str:
        if self.i >= self.last:
            raise UserError(
                f"{self.path}: file ends at line {self.last} while reading {what}: the .net "
                "file is cut short"
            )
        self.i += 1
        return self.lines[self.i - 1]

    @property
    def last(self) -> int:
        """Number of lines (a file ending with a newline has no empty line after it)."""
        return len(self.lines) - (1 if self.lines and self.lines[-1] == "" else 0)

    def at_end(self) -> bool:
        return self.i >= self.last

    def _first_field(self, what: str) -> tuple[str, list[str]]:
        line = self.next(what)
        fields = _fields(line)
        if not fields:
            self.fail(
                f"a blank line where {what} is expected; SNAP's reader fails on it too (it "
                "reads one number per line)"
            )
        if fields[0] == "":
            self.fail(
                f"{line.strip(_JAVA_TRIM)!r} starts with a separator where {what} is expected; "
                "whether SNAP's reader skips it or reads an empty number is not pinned down, "
                "so the file is refused"
            )
        return fields[0], fields

    def _no_second_number(self, fields: list[str], first: str, what: str) -> None:
        if len(fields) > 1 and java_double(fields[1]) is not None:
            self.fail(
                f"two numbers on one line ({first} {fields[1]}) where {what} is expected; "
                f"SNAP's reader takes the first and ignores the rest of the line, so it would "
                f"read {first} and drop {fields[1]}: a second number here means the file's "
                "layout is not what its counts say, so it is refused"
            )

    def count(self, what: str) -> int:
        """A Long.parseLong integer, first field of its line (trailing text ignored)."""
        tok, fields = self._first_field(what)
        if not _JAVA_LONG.fullmatch(tok):
            self.fail(
                f"expected an integer ({what}), found {tok!r}; SNAP's reader (Java "
                "Long.parseLong) fails on it too"
            )
        self._no_second_number(fields, tok, what)
        return int(tok)

    def _value(self, tok: str, what: str) -> float:
        if _NON_FINITE.fullmatch(tok):
            self.fail(f"{what} is {tok!r} (not finite)")
        v = java_double(tok)
        if v is None:
            self.fail(
                f"expected a number ({what}), found {tok!r}; SNAP's reader (Java "
                "Double.valueOf) fails on it too"
            )
        if not np.isfinite(v):
            self.fail(f"{what} is {tok!r} (not finite: beyond float64)")
        return v

    def number(self, what: str) -> float:
        """A Double.valueOf number, first field of its line (trailing text ignored)."""
        tok, fields = self._first_field(what)
        v = self._value(tok, what)
        self._no_second_number(fields, tok, what)
        return v

    def range_pair(self, side: str, i: int) -> tuple[float, float]:
        """A ``min max`` line."""
        tok, fields = self._first_field(f"the min of {side} {i}")
        if len(fields) != 2 or "" in fields:
            shown = self.lines[self.i - 1].strip(_JAVA_TRIM)
            self.fail(
                f"the range of {side} {i} is {shown!r}; a range line holds two numbers, "
                "'min max', and how SNAP's reader takes any other line there is not pinned "
                "down, so the file is refused"
            )
        return self._value(tok, f"the min of {side} {i}"), self._value(
            fields[1], f"the max of {side} {i}"
        )

    def label(self, want: str, sizes_line: int) -> int:
        """A ``bias k n`` / ``wgt k n m`` line: SNAP skips it unread, so it must say what
        the file order means, or the file is refused. Returns its line number."""
        kind = want.split()[0]
        try:
            line = self.next(f"the '{want}' line")
        except UserError:
            raise UserError(
                f"{self.path}: no '{want}' block (file ends at line {self.last}): the .net file "
                "is cut short"
            ) from None
        got = " ".join(line.split())
        if got != want:
            w, g = want.split(), got.split()
            n = int(w[2]) * (int(w[3]) if kind == "wgt" else 1)
            if g[:2] == w[:2] and kind == "bias":
                what = f"{got!r} but #planes (line {sizes_line}) says plane {w[1]} has {w[2]} neurons"
            elif g[:2] == w[:2]:
                what = (
                    f"{got!r} but #planes (line {sizes_line}) says planes {w[1]} and "
                    f"{int(w[1]) + 1} have {w[2]} and {w[3]} neurons: the shapes do not chain"
                )
            else:
                what = f"{got[:60]!r} where the file order puts '{want}'"
            self.fail(
                f"{what}; SNAP's reader skips label lines unread and takes the next {n} values "
                f"in file order as '{want}' whatever the label says, so the file is refused "
                "rather than read one way or the other"
            )
        return self.i


def read(
    path: str | Path,
    *,
    max_weight: float | None = MAX_WEIGHT,
    max_range: float | None = MAX_RANGE,
) -> NetworkSpec:
    """Read an ffbp ``.net`` file into a :class:`NetworkSpec` (sigmoid on every plane).

    The file is read the way SNAP's reader reads it (FORMATS.md): the header ends at the
    first ``#`` character; one number per line, the first of the fields the line splits
    into at space, tab, ``,``, ``;`` or ``:`` (trailing text is ignored); Java number
    literals (``1.0d``, ``2f``, ``1e3D``, hexadecimal); CR, LF or CRLF line ends; after
    the output ranges, everything up to ``#planes=`` skipped. Where SNAP's reading of a
    file would be a guess (a second number on a line, a label that disagrees with the
    block order, a range line that is not ``min max``, text where only ``$`` belongs),
    the file is refused with a UserError naming the line and saying what SNAP would do.

    A file cut short, a block whose size disagrees with ``#planes``, a token that is not
    a number, NaN/Inf, a weight or bias beyond ``max_weight`` (default 1e4) or a range
    limit beyond ``max_range`` (default 1e12; None lifts a limit) or a range with
    min == max raise a UserError naming the line.

    Example:
        >>> read("olci_rw_iop_37x37x37_596495.4.net").output_names
        ['log_apig', 'log_adet', 'log_agelb', 'log_bpart', 'log_bwit']
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an ffbp .net file")
    raw = path.read_bytes()
    if raw[:8] == b"\x89HDF\r\n\x1a\n" or b"\x00" in raw[:4096]:
        raise UserError(f"{path}: is a binary file, not an ffbp .net text file")
    text = raw.decode("utf-8", errors="replace")
    p = str(path)
    hash_pos = text.find("#")
    if hash_pos < 0:
        raise UserError(
            f"{p}: no '#' character after the header: not an ffbp .net file (or it is cut "
            "short before its ranges); SNAP's reader looks for the first '#' too"
        )
    lines = _EOL.split(text)
    before = _EOL.split(text[:hash_pos])
    hash_line = len(before)  # 1-based line of the first '#'
    header_lines = before[:-1] + ([before[-1]] if before[-1].strip() else [])
    header = "\n".join(header_lines)
    note = ""
    if lines[hash_line - 1].strip(_JAVA_TRIM) != "#":
        shown = lines[hash_line - 1].strip(_JAVA_TRIM)
        note = (
            f" (SNAP's reader ends the free-text header at the first '#' character of the "
            f"file, on line {hash_line}: {shown[:60]!r}, skips the rest of that line and "
            "reads the number of inputs from the next one)"
        )
    tok = _Lines(lines, hash_line, p, note)

    ranges: dict[str, tuple[list[float], list[float], list[int]]] = {}
    count_line = {}
    for side in ("input", "output"):
        n = tok.count(f"the number of {side}s")
        count_line[side] = tok.line
        if n < 1:
            tok.fail(f"the number of {side}s must be positive, not {n}")
        if n > _MAX_PLANE:
            tok.fail(f"{n:,} {side}s is not a retrieval network (damaged count?)")
        lo, hi, at = [], [], []
        for i in range(n):
            a, b = tok.range_pair(side, i + 1)
            lo.append(a)
            hi.append(b)
            at.append(tok.line)
        ranges[side] = (lo, hi, at)

    # SNAP skips to the first '=' (the one of '#planes='): only '$' and '#planes' belong
    # in between; anything else would be ignored by SNAP and is refused here.
    skipped = []
    while True:
        try:
            line = tok.next("the '#planes=' line")
        except UserError:
            raise UserError(
                f"{p}: no '#planes=' line after the output ranges (file ends at line "
                f"{tok.last}): the .net file is cut short; SNAP's reader would not find the "
                "'=' it looks for either"
            ) from None
        if "=" in line:
            skipped.append(line[: line.index("=")])
            rest = line[line.index("=") + 1 :]
            break
        skipped.append(line)
    planes_line = tok.line
    gap = "".join("".join(s.split()) for s in skipped)
    if gap not in ("$#planes", "#planes"):
        bad = next(
            (i for i, s in enumerate(skipped) if "".join(s.split()) not in ("", "$", "#planes")),
            len(skipped) - 1,
        )
        at = planes_line - len(skipped) + 1 + bad
        raise UserError(
            f"{p}: line {at}: expected '$' then '#planes=P s0 s1 ...', found "
            f"{skipped[bad].strip()[:60]!r}; SNAP's reader skips everything up to the first "
            "'=' and would ignore it, but text here means the range counts (lines "
            f"{count_line['input']} and {count_line['output']}) or the layout are not what "
            "the file says, so it is refused"
        )
    fields = _fields(rest)
    if not fields or "" in fields or not all(_JAVA_LONG.fullmatch(f) for f in fields):
        raise UserError(
            f"{p}: line {planes_line}: '#planes={rest.strip()[:60]}' must give the number of "
            "planes and their sizes as integers ('#planes=P s0 s1 ...'); SNAP's reader "
            "(Long.parseLong) would fail or misread it"
        )
    n_planes = int(fields[0])
    if n_planes < 2:
        raise UserError(
            f"{p}: line {planes_line}: a network needs at least 2 planes, not {n_planes}"
        )
    if len(fields) != n_planes + 1:
        raise UserError(
            f"{p}: line {planes_line}: '#planes={rest.strip()[:60]}' announces {n_planes} "
            f"planes but lists {len(fields) - 1} sizes; how SNAP's reader takes a line that "
            "disagrees with itself is not pinned down, so the file is refused"
        )
    sizes = [int(f) for f in fields[1:]]
    if any(s < 1 or s > _MAX_PLANE for s in sizes):
        raise UserError(f"{p}: line {planes_line}: plane sizes must be 1..{_MAX_PLANE:,}: {sizes}")
    for side, plane in (("input", 0), ("output", -1)):
        if len(ranges[side][0]) != sizes[plane]:
            raise UserError(
                f"{p}: line {planes_line}: #planes gives {sizes[plane]} {side}s but the ranges "
                f"block (line {count_line[side]}) lists {len(ranges[side][0])}"
            )

    # Biases of planes 1..P-1, then weights of planes 0..P-2, in file order (SNAP's).
    biases: dict[int, tuple[np.ndarray, int]] = {}
    weights: dict[int, tuple[np.ndarray, int]] = {}
    for k in range(1, n_planes):
        s = sizes[k]
        at = tok.label(f"bias {k} {s}", planes_line)
        vals = [tok.number(f"bias {k} value {i + 1} of {s}") for i in range(s)]
        biases[k] = (np.asarray(vals, dtype=np.float64), at)
    for k in range(n_planes - 1):
        a, b = sizes[k], sizes[k + 1]
        at = tok.label(f"wgt {k} {a} {b}", planes_line)
        n = a * b
        vals = [tok.number(f"wgt {k} value {i + 1} of {n}") for i in range(n)]
        weights[k] = (np.asarray(vals, dtype=np.float64).reshape(b, a), at)
    while not tok.at_end():
        line = tok.next("the end of the file")
        if line.strip(_JAVA_TRIM):
            tok.fail(
                f"{line.strip(_JAVA_TRIM)[:60]!r} after the last weight block (wgt "
                f"{n_planes - 2}, line {weights[n_planes - 2][1]}); SNAP's reader stops there "
                "and would ignore it, but more values than the blocks hold mean the sizes "
                "are not what #planes says, so the file is refused"
            )

    names = {"input": {}, "output": {}}
    for ln in header_lines:
        m = _NAME_LINE.match(ln)
        if m:
            names[m.group(1).lower()][int(m.group(2))] = m.group(3).strip()

    def name_list(side: str, n: int) -> list[str] | None:
        got = names[side]
        return [got[i] for i in range(1, n + 1)] if all(i in got for i in range(1, n + 1)) else None

    def where(kind: str, index: int | None) -> str:
        if kind == "weights":
            return f"line {weights[index][1]} (wgt {index})"
        if kind == "biases":
            return f"line {biases[index + 1][1]} (bias {index + 1})"
        if kind in ("input_range", "output_range"):
            side = kind.split("_")[0]
            return f"line {count_line[side]}" if index is None else f"line {ranges[side][2][index]}"
        return "header" if kind.endswith("names") else kind

    def locate(kind: str, layer: int, flat: int) -> str:
        first = (weights[layer][1] if kind == "weights" else biases[layer + 1][1]) + 1
        return f"on line {first + flat}"

    spec = NetworkSpec(
        weights=[weights[k][0] for k in range(n_planes - 1)],
        biases=[biases[k][0] for k in range(1, n_planes)],
        activations=["sigmoid"] * (n_planes - 1),
        input_scaling=Scaling(ranges["input"][0], ranges["input"][1], TARGET),
        output_scaling=Scaling(ranges["output"][0], ranges["output"][1], TARGET),
        input_names=name_list("input", sizes[0]),
        output_names=name_list("output", sizes[-1]),
        source_format=NAME,
        header=header,
    )
    return spec.validate(p, where, max_weight=max_weight, max_range=max_range, locate=locate)


def check_writable(spec: NetworkSpec) -> None:
    """Raise a UserError saying why ``spec`` cannot be written as ffbp, if it cannot."""
    if any(a != "sigmoid" for a in spec.activations):
        raise UserError(
            "ffbp networks use the logistic sigmoid on every plane, the output included; "
            f"this network has {','.join(spec.activations)}: export it as rawh5 (any "
            "activations), or as ocsmart if it has tanh hidden layers and a linear output"
        )
    for side, s in (("inputs", spec.input_scaling), ("outputs", spec.output_scaling)):
        if s is not None and s.target != TARGET:
            raise UserError(
                f"ffbp scales {side} to [0, 1]; this network scales its {side} to "
                f"[{s.target[0]:g}, {s.target[1]:g}]"
            )


def format_number(v: float, precision: str = "float64") -> str:
    """The shortest decimal that reads back as the same float64 (or float32) value.

    Example:
        >>> format_number(0.009782, "float32")
        '0.009782'
    """
    x = np.float32(v) if precision == "float32" else np.float64(v)
    return np.format_float_positional(x, unique=True, trim="0")


def _default_header(spec: NetworkSpec) -> str:
    from mlnnkit._version import __version__

    lines = [
        f"problem: exported by mlnnkit {__version__}",
        f"saved at {time.strftime('%a %b %d %H:%M:%S %Y')}",
        "",
    ]
    for side, names, s, n in (
        ("input", spec.names_in(), spec.input_scaling, spec.n_inputs),
        ("output", spec.names_out(), spec.output_scaling, spec.n_outputs),
    ):
        lines.append(f"the net has {n} {side}s:")
        for i in range(n):
            lo, hi = (s.minimum[i], s.maximum[i]) if s is not None else TARGET
            lines.append(f"{side} {i + 1:2d} is {names[i]} in [{lo:f},{hi:f}]")
        lines.append("")
    lines.append("ranges repeated for easier input")
    return "\n".join(lines)


def write(spec: NetworkSpec, path: str | Path) -> None:
    """Write ``spec`` as an ffbp ``.net`` file at ``path`` (overwrites it).

    The header text of an imported file is written back as it was (``#`` characters
    removed, since SNAP's reader stops at the first one); otherwise a header in the usual
    style is made with the variable names and ranges. A network without scaling gets the
    identity ranges [0, 1]. Numbers are written one per line as the shortest decimal of
    the spec's precision.
    """
    check_writable(spec)
    fmt = lambda v: format_number(v, spec.precision)
    header = spec.header.replace("#", "") if spec.header.strip() else _default_header(spec)
    out = [header, "#"]
    for s, n in ((spec.input_scaling, spec.n_inputs), (spec.output_scaling, spec.n_outputs)):
        s = s or Scaling(np.zeros(n), np.ones(n), TARGET)
        out.append(str(n))
        out.extend(f"{fmt(lo)} {fmt(hi)}" for lo, hi in zip(s.minimum, s.maximum))
    out.append("$")
    out.append(f"#planes={len(spec.sizes)} " + " ".join(map(str, spec.sizes)))
    for k, b in enumerate(spec.biases, start=1):
        out.append(f"bias {k} {b.size}")
        out.extend(fmt(v) for v in b)
    for k, w in enumerate(spec.weights):
        out.append(f"wgt {k} {w.shape[1]} {w.shape[0]}")
        out.extend(fmt(v) for v in np.asarray(w).reshape(-1))
    Path(path).write_text("\n".join(out) + "\n")
