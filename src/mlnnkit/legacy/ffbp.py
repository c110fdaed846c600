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
    >>> spec = read("olci_rw_iop_37x37x37_596495.4.net")  # doctest: +SKIP
    >>> spec.sizes, spec.input_names[:2]                  # doctest: +SKIP
    ([17, 37, 37, 37, 5], ['sun_zenith', 'view_zenith'])
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mlnnkit.errors import UserError
from mlnnkit.legacy.spec import NetworkSpec, Scaling

NAME = "ffbp"
DESCRIPTION = "ffbp .net text (C2RCC / SNAP)"
TARGET = (0.0, 1.0)

_NAME_LINE = re.compile(r"^\s*(input|output)\s+(\d+)\s+is\s+(.+?)\s+in\s+\[", re.IGNORECASE)


def looks_like(head: str) -> bool:
    """True when the start of a text file looks like an ffbp net."""
    return "#planes=" in head or ("problem:" in head and "\n#" in head)


class _Tokens:
    """Whitespace-separated tokens with the line number each one came from."""

    def __init__(self, lines: list[str], start: int, path: str) -> None:
        self.path = path
        self.last_line = len(lines)
        self._it: Iterator[tuple[int, str]] = (
            (i + 1, tok) for i in range(start, len(lines)) for tok in lines[i].split()
        )
        self._peeked: tuple[int, str] | None = None
        self.line = start

    def peek(self) -> tuple[int, str] | None:
        if self._peeked is None:
            self._peeked = next(self._it, None)
        return self._peeked

    def next(self, what: str) -> str:
        item = self.peek()
        if item is None:
            raise UserError(
                f"{self.path}: file ends at line {self.last_line} while reading {what}: "
                "the .net file is cut short"
            )
        self._peeked = None
        self.line = item[0]
        return item[1]

    def int(self, what: str) -> int:
        tok = self.next(what)
        try:
            return int(tok)
        except ValueError:
            raise UserError(
                f"{self.path}: line {self.line}: expected an integer ({what}), found {tok!r}"
            ) from None

    def float(self, what: str) -> float:
        tok = self.next(what)
        try:
            v = float(tok)
        except ValueError:
            raise UserError(
                f"{self.path}: line {self.line}: expected a number ({what}), found {tok!r}"
            ) from None
        if not np.isfinite(v):
            raise UserError(f"{self.path}: line {self.line}: {what} is {tok!r} (not finite)")
        return v


def read(path: str | Path) -> NetworkSpec:
    """Read an ffbp ``.net`` file into a :class:`NetworkSpec` (sigmoid on every plane).

    A file cut short, a block whose size disagrees with ``#planes``, a token that is not
    a number, NaN/Inf or a range with min == max raise a UserError naming the line.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    raw = path.read_bytes()
    if raw[:8] == b"\x89HDF\r\n\x1a\n" or b"\x00" in raw[:4096]:
        raise UserError(f"{path}: is a binary file, not an ffbp .net text file")
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines()
    p = str(path)
    hash_at = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("#")), None)
    if hash_at is None:
        raise UserError(
            f"{p}: no line starting with '#' after the header: not an ffbp .net file "
            "(or it is cut short before its ranges)"
        )
    header = "\n".join(lines[:hash_at])
    tok = _Tokens(lines, hash_at + 1, p)

    ranges: dict[str, tuple[list[float], list[float], list[int]]] = {}
    count_line = {}
    for side in ("input", "output"):
        n = tok.int(f"the number of {side}s")
        count_line[side] = tok.line
        if n < 1:
            raise UserError(
                f"{p}: line {tok.line}: the number of {side}s must be positive, not {n}"
            )
        lo, hi, at = [], [], []
        for i in range(n):
            lo.append(tok.float(f"the min of {side} {i + 1}"))
            at.append(tok.line)
            hi.append(tok.float(f"the max of {side} {i + 1}"))
        ranges[side] = (lo, hi, at)

    word = tok.next("the '#planes=' line")
    if word == "$":
        word = tok.next("the '#planes=' line")
    if not word.startswith("#planes"):
        raise UserError(
            f"{p}: line {tok.line}: expected '$' then '#planes=P s0 s1 ...', found {word!r}"
        )
    planes_line = tok.line
    rest = word.split("=", 1)[1] if "=" in word else ""
    n_planes = int(rest) if rest.strip().lstrip("-").isdigit() else tok.int("the number of planes")
    if n_planes < 2:
        raise UserError(
            f"{p}: line {planes_line}: a network needs at least 2 planes, not {n_planes}"
        )
    sizes = [tok.int(f"the size of plane {k} on the '#planes' line") for k in range(n_planes)]
    if any(s < 1 for s in sizes):
        raise UserError(f"{p}: line {planes_line}: plane sizes must be positive: {sizes}")
    for side, plane in (("input", 0), ("output", -1)):
        if len(ranges[side][0]) != sizes[plane]:
            raise UserError(
                f"{p}: line {planes_line}: #planes gives {sizes[plane]} {side}s but the ranges "
                f"block (line {count_line[side]}) lists {len(ranges[side][0])}"
            )

    biases: dict[int, tuple[np.ndarray, int]] = {}
    weights: dict[int, tuple[np.ndarray, int]] = {}
    while tok.peek() is not None:
        kw = tok.next("a 'bias' or 'wgt' line")
        at = tok.line
        if kw == "bias":
            k = tok.int("the plane number of a 'bias' line")
            s = tok.int(f"the size on 'bias {k}'")
            if not 1 <= k < n_planes:
                raise UserError(
                    f"{p}: line {at}: 'bias {k} {s}': planes with a bias are 1..{n_planes - 1}"
                )
            if s != sizes[k]:
                raise UserError(
                    f"{p}: line {at}: 'bias {k} {s}' but #planes (line {planes_line}) says plane "
                    f"{k} has {sizes[k]} neurons"
                )
            vals = [tok.float(f"bias {k} value {i + 1} of {s}") for i in range(s)]
            biases[k] = (np.asarray(vals), at)
        elif kw == "wgt":
            k = tok.int("the plane number of a 'wgt' line")
            a = tok.int(f"the first size on 'wgt {k}'")
            b = tok.int(f"the second size on 'wgt {k}'")
            if not 0 <= k < n_planes - 1:
                raise UserError(f"{p}: line {at}: 'wgt {k}': weight blocks are 0..{n_planes - 2}")
            if (a, b) != (sizes[k], sizes[k + 1]):
                raise UserError(
                    f"{p}: line {at}: 'wgt {k} {a} {b}' but #planes (line {planes_line}) says "
                    f"planes {k} and {k + 1} have {sizes[k]} and {sizes[k + 1]} neurons: the "
                    "shapes do not chain"
                )
            n = a * b
            vals = [tok.float(f"wgt {k} value {i + 1} of {n}") for i in range(n)]
            weights[k] = (np.asarray(vals).reshape(b, a), at)
        else:
            raise UserError(
                f"{p}: line {at}: expected a 'bias k n' or 'wgt k n m' line, found {kw!r}"
            )

    for k in range(1, n_planes):
        if k not in biases:
            raise UserError(
                f"{p}: no 'bias {k} {sizes[k]}' block (file ends at line {len(lines)}): the "
                ".net file is cut short"
            )
    for k in range(n_planes - 1):
        if k not in weights:
            raise UserError(
                f"{p}: no 'wgt {k} {sizes[k]} {sizes[k + 1]}' block (file ends at line "
                f"{len(lines)}): the .net file is cut short"
            )

    names = {"input": {}, "output": {}}
    for ln in lines[:hash_at]:
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
    return spec.validate(p, where)


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
