# Over 400 lines: one job, each variable's transform and name (family table, grammar, resolve).
"""Which transforms a processor applies around a network, and the physical names.

A legacy file holds only the network; the processor that ships it transforms the physical
inputs before it and the outputs after it (../shared/RETRIEVALS.md). A :class:`Recipe`
says, per variable, which transform of :mod:`mlnnkit.layers` applies and what the
physical variable is called. Recipes come from:

- OC-SMART's file names (:func:`ocsmart_family`): ``PACE_Lrc_aaNN.H5``, ``OLCI_aphNN.h5``,
  any sensor prefix, suffix case ignored; the table :data:`OCSMART_FAMILIES`;
- C2RCC's (ffbp) variable names: ``log_X`` is ``ln(X)``: the physical input is ``X``
  (``ln`` before the network), the physical output ``X`` (``exp`` after it); other names
  are used as they are (identity);
- the user (:func:`parse_transforms`, :func:`parse_names`): ``cos_deg:1-3,log10:4-110``,
  1-based indices and ranges, and comma lists of names. They override a recipe for the
  variables they list; variables a ``transforms`` text does not list keep the recipe's
  transform, or ``identity`` when no recipe applies.

:func:`resolve` joins the three for one network.

Example:
    >>> parse_transforms("cos_deg:1-3,log10:4-5", 6, "input")
    ['cos_deg', 'cos_deg', 'cos_deg', 'log10', 'log10', 'identity']
    >>> ocsmart_family("S2A_Lrc_rrsNN.h5")
    'Lrc_rrsNN'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlnnkit.errors import UserError

# The layers' vocabulary, repeated here so that reading a file's recipe needs no Keras
# (mlnnkit.layers imports Keras); tests check both stay the same.
INPUT_TRANSFORMS = ("identity", "log10", "ln", "cos_deg")
OUTPUT_TRANSFORMS = ("identity", "pow10", "exp")

#: Option names in error messages, per caller: the library's parameter names...
PARAMETERS = {
    "transforms": "transforms",
    "output_transforms": "output_transforms",
    "names": "names",
    "output_names": "output_names",
}
#: ... and the CLI's options.
OPTIONS = {
    "transforms": "--transforms",
    "output_transforms": "--output-transforms",
    "names": "--names",
    "output_names": "--output-names",
}


@dataclass(frozen=True)
class Family:
    """One OC-SMART network family (a row of RETRIEVALS.md's table).

    Attributes:
        suffix: the file-name suffix after the sensor, e.g. ``Lrc_aaNN``.
        angles: whether the inputs start with solz, senz, relaz (cos of degrees).
        inputs: the band variable of the inputs (``Lrc`` or ``Rrs``), all log10.
        extra: the inputs after the bands (``rh`` for aaNN and aodNN), log10.
        output: the output variable (``Lrc``, ``aod``, ``Rrs``, ``aph`` ...), all 10**.
    """

    suffix: str
    angles: bool
    inputs: str
    extra: tuple[str, ...]
    output: str

    @property
    def n_fixed(self) -> int:
        """Inputs that are not bands: ``n = Layers[0] - n_fixed``."""
        return (3 if self.angles else 0) + len(self.extra)

    def describe(self) -> str:
        parts = (["solz, senz, relaz (cos_deg)"] if self.angles else []) + [
            f"{self.inputs}_1..n (log10)"
        ]
        parts += [f"{e} (log10)" for e in self.extra]
        return f"S_{self.suffix}: {', '.join(parts)} -> {self.output}_1..m (pow10)"


#: OC-SMART families by file-name suffix (RETRIEVALS.md).
OCSMART_FAMILIES = {
    f.suffix.lower(): f
    for f in (
        Family("Lrc_aaNN", True, "Lrc", ("rh",), "Lrc"),
        Family("Lrc_aodNN", True, "Lrc", ("rh",), "aod"),
        Family("Lrc_rrsNN", True, "Lrc", (), "Rrs"),
        Family("Lrc_LrcaNN", True, "Lrc", (), "Lrca"),
        Family("aphNN", False, "Rrs", (), "aph"),
        Family("adgNN", False, "Rrs", (), "adg"),
        Family("bbpNN", False, "Rrs", (), "bbp"),
        Family("apNN", False, "Rrs", (), "ap"),
        Family("bpNN", False, "Rrs", (), "bp"),
    )
}
_FAMILY_RE = re.compile(
    r"(?:^|_)(" + "|".join(re.escape(k) for k in OCSMART_FAMILIES) + r")$", re.IGNORECASE
)
C2RCC = "C2RCC"


def known_families() -> str:
    """The recognised families, for messages: ``S_Lrc_aaNN, ..., C2RCC ffbp (log_X)``.

    Example:
        >>> known_families().split(", ")[:2]
        ['S_Lrc_aaNN', 'S_Lrc_aodNN']
    """
    return ", ".join(f"S_{f.suffix}" for f in OCSMART_FAMILIES.values()) + (
        " (OC-SMART, S = any sensor prefix), C2RCC ffbp .net (log_X names)"
    )


def ocsmart_family(path: str | Path) -> str | None:
    """The OC-SMART family suffix of a file name, or None.

    The file's stem must end with a family suffix, after ``_`` or alone: any sensor
    prefix (``PACE_``, ``MODIS-Aqua_``, ``S2A_``), case ignored (``.H5`` or ``.h5``,
    ``aaNN`` or ``AANN``).

    Args:
        path: the file (only its name is used).

    Example:
        >>> ocsmart_family("PACE_Lrc_aaNN.H5"), ocsmart_family("olci_APHNN.h5")
        ('Lrc_aaNN', 'aphNN')
        >>> ocsmart_family("OLCI_Lrc_aphNN_old.h5") is None
        True
    """
    m = _FAMILY_RE.search(Path(path).stem)
    return OCSMART_FAMILIES[m.group(1).lower()].suffix if m else None


@dataclass
class Recipe:
    """Per variable, the transform and the physical name, for one network.

    Attributes:
        family: what was recognised (``"OC-SMART Lrc_aaNN"``, ``"C2RCC"``), or None.
        source: how the recipe was obtained, for people (``"file name PACE_Lrc_aaNN"``).
        input_transforms, output_transforms: one name per variable.
        input_names, output_names: physical names.
        network_input_names, network_output_names: the network's own names (the file's,
            else made from the physical names: ``cos_solz``, ``log10_Lrc_1``).
    """

    family: str | None
    source: str
    input_transforms: list[str]
    output_transforms: list[str]
    input_names: list[str]
    output_names: list[str]
    network_input_names: list[str]
    network_output_names: list[str]
    overridden: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line: what was recognised and which options changed it."""
        what = self.family or "no family recognised"
        extra = f"; overridden by {', '.join(self.overridden)}" if self.overridden else ""
        return f"{what} ({self.source}){extra}"


_NET_PREFIX = {"cos_deg": "cos_", "log10": "log10_", "ln": "log_", "pow10": "log10_", "exp": "log_"}


def network_name(physical: str, transform: str) -> str:
    """The network-space name of a physical variable: ``cos_solz``, ``log10_Lrc_1``."""
    return _NET_PREFIX.get(transform, "") + physical


def physical_name(network: str, transform: str) -> str:
    """The physical name of a network variable: ``log_rw_443`` under ``ln`` -> ``rw_443``."""
    prefix = _NET_PREFIX.get(transform, "")
    return network[len(prefix) :] if prefix and network.startswith(prefix) else network


def _ocsmart(family: Family, n_in: int, n_out: int, path) -> tuple:
    n = n_in - family.n_fixed
    if n < 1:
        raise UserError(
            f"{path}: an OC-SMART S_{family.suffix} network has {family.n_fixed} inputs "
            f"besides its bands, but this one has {n_in} inputs in all: pass --transforms "
            "and --names for it"
        )
    angles = ["solz", "senz", "relaz"] if family.angles else []
    names = angles + [f"{family.inputs}_{k}" for k in range(1, n + 1)] + list(family.extra)
    tin = ["cos_deg"] * len(angles) + ["log10"] * (n + len(family.extra))
    outs = [f"{family.output}_{k}" for k in range(1, n_out + 1)]
    return tin, ["pow10"] * n_out, names, outs


def _c2rcc(names_in: list[str], names_out: list[str]) -> tuple:
    tin = ["ln" if n.startswith("log_") else "identity" for n in names_in]
    tout = ["exp" if n.startswith("log_") else "identity" for n in names_out]
    return (
        tin,
        tout,
        [physical_name(n, t) for n, t in zip(names_in, tin)],
        [physical_name(n, t) for n, t in zip(names_out, tout)],
    )


def parse_transforms(
    text: str | Sequence[str] | None,
    n: int,
    side: str,
    *,
    base: Sequence[str] | None = None,
    option: str = "transforms",
) -> list[str]:
    """Per-variable transforms from ``kind:spec,kind:spec`` (1-based indices, ranges).

    ``spec`` is an index (``111``), a range (``4-110``) or ``all``; a bare ``kind``
    means all variables. Variables not listed keep ``base`` (default: ``identity``). A
    list of ``n`` names is taken as it is.

    Args:
        text: the grammar text, a list of ``n`` transform names, or None (``base``).
        n: the number of variables.
        side: ``"input"`` (``identity, log10, ln, cos_deg``) or ``"output"``
            (``identity, pow10, exp``).
        base: the transforms of unlisted variables (a recipe's), default all identity.
        option: the option or parameter named in errors (default ``"transforms"``).

    Example:
        >>> parse_transforms("pow10", 3, "output")
        ['pow10', 'pow10', 'pow10']
        >>> parse_transforms("ln:2", 3, "input", base=["cos_deg"] * 3)
        ['cos_deg', 'ln', 'cos_deg']
    """
    vocab = INPUT_TRANSFORMS if side == "input" else OUTPUT_TRANSFORMS
    out = list(base) if base is not None else ["identity"] * n
    if text is None:
        return out
    if not isinstance(text, str):
        items = [str(t) for t in text]
        if len(items) != n:
            raise UserError(f"{option}: {len(items)} transforms for the {n} {side}s of the network")
        bad = sorted({t for t in items if t not in vocab})
        if bad:
            raise UserError(f"{option}: unknown {side} transform {bad[0]!r}; use {', '.join(vocab)}")
        return items
    seen: dict[int, str] = {}
    example = "cos_deg:1-3,log10:4-110" if side == "input" else "pow10:1-5"
    for item in (p.strip() for p in text.split(",")):
        if not item:
            raise UserError(f"{option} {text!r}: an empty item; write e.g. {example}")
        kind, _, spec = item.partition(":")
        kind, spec = kind.strip(), spec.strip() or "all"
        if kind not in vocab:
            hint = ""
            if kind in (INPUT_TRANSFORMS if side == "output" else OUTPUT_TRANSFORMS):
                hint = f" ({kind} is an {'input' if side == 'output' else 'output'} transform)"
            raise UserError(
                f"{option}: unknown {side} transform {kind!r}{hint}; use {', '.join(vocab)}"
            )
        if spec.lower() == "all":
            lo, hi = 1, n
        else:
            m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", spec)
            if not m:
                raise UserError(
                    f"{option}: {item!r}: after ':' write a 1-based index or range "
                    f"(e.g. {example})"
                )
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) else lo
            if lo > hi:
                raise UserError(f"{option}: {item!r}: the range {lo}-{hi} runs backwards")
            if lo < 1 or hi > n:
                raise UserError(
                    f"{option}: {item!r}: the network has {n} {side}s (numbered 1-{n})"
                )
        for i in range(lo, hi + 1):
            if i in seen:
                raise UserError(
                    f"{option}: {side} {i} is given twice ({seen[i]} and {kind}); list each "
                    "variable once"
                )
            seen[i] = kind
            out[i - 1] = kind
    return out


def parse_names(
    text: str | Sequence[str] | None, n: int, side: str, *, option: str = "names"
) -> list[str] | None:
    """Names from a comma list (or a list), checked: ``n`` of them, distinct, non-empty.

    Example:
        >>> parse_names("solz, senz", 2, "input")
        ['solz', 'senz']
    """
    if text is None:
        return None
    names = [s.strip() for s in text.split(",")] if isinstance(text, str) else [str(s) for s in text]
    if len(names) != n:
        raise UserError(f"{option}: {len(names)} names for the {n} {side}s of the network")
    if any(not s for s in names):
        raise UserError(f"{option}: an empty name (write a comma list of {n} names)")
    dup = sorted({s for s in names if names.count(s) > 1})
    if dup:
        raise UserError(f"{option}: {dup[0]!r} is given more than once; names must be distinct")
    return names


def resolve(
    spec,
    path: str | Path,
    *,
    transforms: str | Sequence[str] | None = None,
    output_transforms: str | Sequence[str] | None = None,
    names: str | Sequence[str] | None = None,
    output_names: str | Sequence[str] | None = None,
    options: dict[str, str] = PARAMETERS,
) -> Recipe:
    """The recipe for the network ``spec`` read from ``path``.

    The family comes from the file (an OC-SMART file name, C2RCC ``log_`` names of an
    ffbp file); ``transforms``/``output_transforms`` override it for the variables they
    list, ``names``/``output_names`` replace its names.

    Args:
        spec: the :class:`~mlnnkit.legacy.spec.NetworkSpec` read from ``path``.
        path: the network file (its name says the OC-SMART family).
        transforms, output_transforms: see :func:`parse_transforms`; default None.
        names, output_names: see :func:`parse_names`; default None.
        options: how errors name these four (library parameters or CLI options).

    Raises:
        UserError: no family recognised and neither transforms given (the message names
            the known families and the options), or an option that does not fit.

    Example:
        >>> from mlnnkit import legacy
        >>> r = resolve(legacy.read("PACE_Lrc_aaNN.H5"), "PACE_Lrc_aaNN.H5")
        >>> r.input_names[:4], r.input_transforms[:4]
        (['solz', 'senz', 'relaz', 'Lrc_1'], ['cos_deg', 'cos_deg', 'cos_deg', 'log10'])
    """
    n_in, n_out = spec.n_inputs, spec.n_outputs
    file_in, file_out = spec.names_in(), spec.names_out()
    family = None
    suffix = ocsmart_family(path) if spec.source_format in ("ocsmart", None) else None
    if suffix is not None:
        fam = OCSMART_FAMILIES[suffix.lower()]
        tin, tout, pin, pout = _ocsmart(fam, n_in, n_out, path)
        family, source = f"OC-SMART {fam.suffix}", f"file name {Path(path).name}"
    elif spec.source_format == "ffbp" and spec.input_names and spec.output_names:
        tin, tout, pin, pout = _c2rcc(spec.input_names, spec.output_names)
        family, source = C2RCC, "ffbp variable names: log_X = ln(X)"
    elif transforms is None and output_transforms is None:
        raise UserError(
            f"{path}: no known retrieval family (file name or variable names), so the "
            f"physical transforms are unknown. Known: {known_families()}. Pass "
            f"{options['transforms']} (e.g. cos_deg:1-3,log10:4-10) and "
            f"{options['output_transforms']} (e.g. pow10), with {options['names']} / "
            f"{options['output_names']}, or import without physical units"
        )
    else:
        tin, tout = ["identity"] * n_in, ["identity"] * n_out
        pin, pout = file_in, file_out
        source = "given transforms"
    overridden = [
        options[k]
        for k, v in (
            ("transforms", transforms),
            ("output_transforms", output_transforms),
            ("names", names),
            ("output_names", output_names),
        )
        if v is not None
    ]
    tin2 = parse_transforms(transforms, n_in, "input", base=tin, option=options["transforms"])
    tout2 = parse_transforms(
        output_transforms, n_out, "output", base=tout, option=options["output_transforms"]
    )
    net_in = list(spec.input_names) if spec.input_names else [
        network_name(p, t) for p, t in zip(pin, tin)
    ]
    net_out = list(spec.output_names) if spec.output_names else [
        network_name(p, t) for p, t in zip(pout, tout)
    ]
    if suffix is None:  # physical names from the network's, under the final transforms
        pin = [physical_name(n, t) for n, t in zip(net_in, tin2)]
        pout = [physical_name(n, t) for n, t in zip(net_out, tout2)]
    pin = parse_names(names, n_in, "input", option=options["names"]) or pin
    pout = parse_names(output_names, n_out, "output", option=options["output_names"]) or pout
    return Recipe(family, source, tin2, tout2, pin, pout, net_in, net_out, overridden)


_UNITS = {"cos_deg": " degrees"}


def physical_ranges(
    minimum: Sequence[float], maximum: Sequence[float], transforms: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The network's ranges (its own variables) in physical units, per variable.

    Both ends mapped to physical units (the inverse of an input transform, an output
    transform itself), sorted: a cosine range ``[cmin, cmax]`` is
    ``[acos(cmax), acos(cmin)]`` degrees, a log10 range ``[a, b]`` is ``[10**a, 10**b]``.

    Example:
        >>> lo, hi = physical_ranges([0.5, -3.0], [1.0, 0.0], ["cos_deg", "log10"])
        >>> lo.round(6).tolist(), hi.round(6).tolist()
        ([0.0, 0.001], [60.0, 1.0])
    """
    lo, hi = np.asarray(minimum, float), np.asarray(maximum, float)
    a = np.array([_to_physical(t, v) for t, v in zip(transforms, lo)])
    b = np.array([_to_physical(t, v) for t, v in zip(transforms, hi)])
    return np.minimum(a, b), np.maximum(a, b)


def _to_physical(kind: str, v: float) -> float:
    """A network-space value in physical units: the inverse of an input transform, the
    output transform itself."""
    with np.errstate(all="ignore"):
        if kind == "cos_deg":
            return float(np.degrees(np.arccos(np.clip(v, -1.0, 1.0))))
        if kind in ("log10", "pow10"):
            return float(10.0**v)
        if kind in ("ln", "exp"):
            return float(np.exp(v))
    return float(v)


def describe(recipe: Recipe, spec) -> str:
    """Lines for ``mlnnkit inspect``: the family, then every physical variable with its
    transform and its range in physical units, next to the network's own."""
    lines = [f"physical:    {recipe.describe()}"]
    for side, scaling, tr, pn, nn in (
        ("inputs", spec.input_scaling, recipe.input_transforms, recipe.input_names,
         recipe.network_input_names),
        ("outputs", spec.output_scaling, recipe.output_transforms, recipe.output_names,
         recipe.network_output_names),
    ):
        lines.append(f"physical {side} ({len(pn)}):")
        w, wt, wn = max(map(len, pn)), max(map(len, tr)), max(map(len, nn))
        if scaling is not None:
            plo, phi = physical_ranges(scaling.minimum, scaling.maximum, tr)
        for i, (p, t, n) in enumerate(zip(pn, tr, nn)):
            rng = net = ""
            if scaling is not None:
                rng = f"[{plo[i]:.7g}, {phi[i]:.7g}]{_UNITS.get(t, '')}"
                net = f"[{scaling.minimum[i]:.7g}, {scaling.maximum[i]:.7g}]"
            lines.append(
                f"  {i + 1:>4}  {p:<{w}}  {rng:<34}  {t:<{wt}} -> {n:<{wn}}  {net}".rstrip()
            )
    return "\n".join(lines)
