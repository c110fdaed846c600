"""Damaged copies of the real fixtures, a few hundred of them with a fixed seed: each one
either imports and verifies, or ends in a one-line UserError; never another exception,
never a warning, never a file written.

Mutations of the ffbp text: truncation, flipped bits (anywhere, or among the numbers),
NaN/Inf/huge values, dropped, repeated and swapped lines, wrong counts (number of inputs
or outputs, #planes sizes, block labels), junk lines. Of the OC-SMART HDF5: truncation,
flipped bytes (anywhere, inside a dataset's data, or in the metadata), NaN/Inf/huge values, dropped
datasets, wrong ``Layers``, arrays of the wrong shape; also of such a file with names in
its attributes, as mlnnkit writes it.

Library calls (``legacy.read``, then ``to_keras`` + ``verify`` on a few samples) keep
it fast; a handful of CLI runs check the CLI's side of the contract (exit 2, one line on
stderr, no output file, no temporary file).
"""

from __future__ import annotations

import hashlib
import shutil
import time
import warnings
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from mlnnkit import legacy
from mlnnkit.errors import UserError
from mlnnkit.legacy import ocsmart

SEED = 15
# One network of each format: most of the time goes into compiling the first model of
# an architecture, not into the cases.
NETS = ["msi_complex_20200321_rw_rwnorm_27x7x27_28.0.net"]
N_TEXT = 200  # per .net fixture
N_H5 = 100
N_H5_NAMED = 60  # an OC-SMART file as mlnnkit writes it: names in attributes too


# ---- mutations --------------------------------------------------------------------


def _value_lines(lines):
    h = next(i for i, ln in enumerate(lines) if ln.startswith("#planes"))
    return [i for i in range(h + 1, len(lines)) if lines[i] and not lines[i][0].isalpha()]


def _count_lines(lines):
    h = next(i for i, ln in enumerate(lines) if ln.startswith("#") and not ln.startswith("#p"))
    n_in = int(lines[h + 1])
    return [h + 1, h + 2 + n_in]


HUGE = ["6.4e163", "-2e300", "1e400", "1e5", "-3.3e4", "4e38", "1e-320"]
NONFINITE = ["NaN", "Infinity", "-Infinity", "nan", "inf"]


def mutate_text(raw: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    text = raw.decode()
    lines = text.split("\n")
    kind = rng.choice(
        ["truncate", "flip", "flip_numbers", "nonfinite", "huge", "drop", "repeat", "swap",
         "count", "planes", "label", "junk"]
    )
    vals = _value_lines(lines)
    if kind == "truncate":
        cut = int(rng.integers(0, len(raw)))
        return f"truncate at byte {cut}", raw[:cut]
    if kind in ("flip", "flip_numbers"):
        b = bytearray(raw)
        lo = raw.index(b"#planes") if kind == "flip_numbers" else 0
        n = int(rng.integers(1, 4))
        where = sorted(int(i) for i in rng.integers(lo, len(b), size=n))
        for i in where:
            b[i] ^= 1 << int(rng.integers(0, 8))
        return f"{kind} bytes {where}", bytes(b)
    if kind == "nonfinite":
        i = int(rng.choice(vals))
        lines[i] = str(rng.choice(NONFINITE))
        desc = f"line {i + 1} = {lines[i]}"
    elif kind == "huge":
        i = int(rng.choice(vals))
        lines[i] = str(rng.choice(HUGE))
        desc = f"line {i + 1} = {lines[i]}"
    elif kind == "drop":
        i = int(rng.integers(0, len(lines)))
        desc = f"drop line {i + 1}: {lines[i][:30]!r}"
        del lines[i]
    elif kind == "repeat":
        i = int(rng.integers(0, len(lines)))
        desc = f"repeat line {i + 1}: {lines[i][:30]!r}"
        lines.insert(i, lines[i])
    elif kind == "swap":
        i, j = (int(v) for v in rng.integers(0, len(lines), size=2))
        lines[i], lines[j] = lines[j], lines[i]
        desc = f"swap lines {i + 1} and {j + 1}"
    elif kind == "count":
        i = int(rng.choice(_count_lines(lines)))
        lines[i] = str(int(lines[i]) + int(rng.choice([-2, -1, 1, 2, 1000])))
        desc = f"count on line {i + 1} = {lines[i]}"
    elif kind == "planes":
        i = next(k for k, ln in enumerate(lines) if ln.startswith("#planes"))
        parts = lines[i].split()
        k = int(rng.integers(1, len(parts)))
        parts[k] = str(max(0, int(parts[k]) + int(rng.choice([-1, 1, 5]))))
        lines[i] = " ".join(parts)
        desc = f"planes line = {lines[i]}"
    elif kind == "label":
        labels = [k for k, ln in enumerate(lines) if ln.startswith(("bias ", "wgt "))]
        i = int(rng.choice(labels))
        parts = lines[i].split()
        k = int(rng.integers(1, len(parts)))
        parts[k] = str(int(parts[k]) + int(rng.choice([-1, 1])))
        lines[i] = " ".join(parts)
        desc = f"label line {i + 1} = {lines[i]}"
    else:  # junk
        i = int(rng.integers(0, len(lines)))
        junk = str(rng.choice(["", "junk", "0.5 0.5", "#", "$", "=", "1,2;3", "\x7f"]))
        lines.insert(i, junk)
        desc = f"insert {junk!r} before line {i + 1}"
    return f"{kind}: {desc}", "\n".join(lines).encode()


def _datasets(path: Path) -> dict[str, tuple[int, int]]:
    """name -> (byte offset, size) of each contiguous dataset's raw data."""
    out = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                off = obj.id.get_offset()
                if off is not None:
                    out[name] = (int(off), int(obj.id.get_storage_size()))

        f.visititems(visit)
    return out


def mutate_h5(src: Path, dst: Path, rng: np.random.Generator, layout) -> str:
    shutil.copy(src, dst)
    kind = rng.choice(
        ["truncate", "flip", "flip_data", "flip_meta", "nonfinite", "huge", "drop", "layers",
         "shape"]
    )
    names = sorted(layout)
    if kind in ("truncate", "flip", "flip_data", "flip_meta"):
        b = bytearray(src.read_bytes())
        if kind == "truncate":
            cut = int(rng.integers(0, len(b)))
            dst.write_bytes(bytes(b[:cut]))
            return f"truncate at byte {cut}"
        if kind == "flip":
            where = sorted(int(i) for i in rng.integers(0, len(b), size=int(rng.integers(1, 9))))
            desc = f"flip bytes {where}"
        elif kind == "flip_meta":  # headers, B-trees, heaps, attributes: not array data
            data = np.zeros(len(b), bool)
            for off, size in layout.values():
                data[off : off + size] = True
            meta = np.flatnonzero(~data)
            where = sorted(int(i) for i in rng.choice(meta, size=int(rng.integers(1, 13))))
            desc = f"flip metadata bytes {where}"
        else:
            name = str(rng.choice(names))
            off, size = layout[name]
            where = sorted(int(i) for i in off + rng.integers(0, size, size=int(rng.integers(1, 4))))
            desc = f"flip bytes {where} of {name}"
        for i in where:
            b[i] ^= int(rng.integers(1, 256))
        dst.write_bytes(bytes(b))
        return desc
    with h5py.File(dst, "r+") as f:
        name = str(rng.choice([n for n in names if n != "Layers"]))
        a = f[name][()]
        if kind in ("nonfinite", "huge"):
            idx = tuple(int(rng.integers(0, s)) for s in a.shape)
            pool = [np.nan, np.inf, -np.inf] if kind == "nonfinite" else [6.4e163, -1e300, 2e4, 1e13]
            a[idx] = float(rng.choice(pool))
            f[name][...] = a
            return f"{name}{list(idx)} = {a[idx]}"
        if kind == "drop":
            del f[name]
            return f"drop {name}"
        if kind == "layers":
            lay = f["Layers"][()]
            lay[int(rng.integers(0, lay.size))] += int(rng.choice([-1, 1, 100]))
            f["Layers"][...] = lay
            return f"Layers = {lay.tolist()}"
        cut = a[:-1] if a.shape[0] > 1 else a[:, :-1]
        del f[name]
        f[name] = cut
        return f"{name} shape {a.shape} -> {cut.shape}"


# ---- the check of one damaged file ----------------------------------------------------


def _fingerprint(spec) -> str:
    h = hashlib.sha256()
    for a in spec.weights + spec.biases:
        h.update(np.ascontiguousarray(a).tobytes())
    for s in (spec.input_scaling, spec.output_scaling):
        h.update(s.minimum.tobytes() + s.maximum.tobytes())
    return h.hexdigest()


def check_one(path: Path, desc: str, capfd, verified: set[str]) -> str:
    """'imported' or 'refused'; anything else fails the test with the case named.
    ``verified``: fingerprints of networks already imported and verified (a damaged free
    text often leaves the numbers as they were: the same network is not checked twice)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            spec = legacy.read(path)
        except UserError as e:
            assert "\n" not in str(e), f"{desc}: a message of several lines: {e}"
            outcome = "refused"
        else:
            key = _fingerprint(spec)
            if key not in verified:
                # as `mlnnkit import` does: float32, else float64 when float32 is not enough
                result = legacy.verify(legacy.to_keras(spec, "float32"), spec, samples=16)
                if not result.passed:
                    result = legacy.verify(legacy.to_keras(spec, "float64"), spec, samples=16)
                assert result.passed, f"{desc}: imported but does not verify: {result.summary()}"
                verified.add(key)
            outcome = "imported"
    assert not caught, f"{desc}: warnings {[str(w.message) for w in caught]}"
    out, err = capfd.readouterr()
    assert not out and not err, f"{desc}: printed {out!r} {err!r}"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], f"{desc}: wrote files"
    return outcome


def test_damaged_fixtures_import_and_verify_or_are_refused(fixtures_dir, tmp_path, capfd):
    rng = np.random.default_rng(SEED)
    tally: Counter[tuple[str, str]] = Counter()
    t0 = time.perf_counter()
    folder = tmp_path / "case"
    folder.mkdir()
    verified: set[str] = set()
    for name in NETS:
        raw = (fixtures_dir / "c2rcc" / name).read_bytes()
        for n in range(N_TEXT):
            desc, data = mutate_text(raw, rng)
            path = folder / "damaged.net"
            path.write_bytes(data)
            tally[("ffbp", check_one(path, f"{name} case {n}: {desc}", capfd, verified))] += 1
    src = fixtures_dir / "ocsmart" / "PACE_Lrc_aaNN.H5"
    layout = _datasets(src)
    (folder / "damaged.net").unlink()
    for n in range(N_H5):
        path = folder / "damaged.h5"
        desc = mutate_h5(src, path, rng, layout)
        tally[("ocsmart", check_one(path, f"PACE case {n}: {desc}", capfd, verified))] += 1
    spec = legacy.read(src)
    spec.input_names = [f"input_{i}" for i in range(spec.n_inputs)]
    spec.output_names = [f"output_{i}" for i in range(spec.n_outputs)]
    named = tmp_path / "named.h5"
    ocsmart.write(spec, named)
    layout = _datasets(named)
    for n in range(N_H5_NAMED):
        path = folder / "damaged.h5"
        desc = mutate_h5(named, path, rng, layout)
        tally[("ocsmart", check_one(path, f"named case {n}: {desc}", capfd, verified))] += 1
    seconds = time.perf_counter() - t0
    total = sum(tally.values())
    assert total == len(NETS) * N_TEXT + N_H5 + N_H5_NAMED
    # Both outcomes occur: the mutations are neither all harmless nor all fatal.
    for fmt in ("ffbp", "ocsmart"):
        assert tally[(fmt, "refused")] > 0 and tally[(fmt, "imported")] > 0, tally
    with capfd.disabled():
        print(
            f"\n{total} damaged files in {seconds:.1f} s: {dict(tally)}; "
            f"{len(verified)} distinct networks imported and verified"
        )


# ---- the CLI's side: exit 2, one line, nothing written ------------------------------

CLI_CASES = [
    ("truncate", lambda lines: lines[: len(lines) // 2]),
    ("nan", lambda lines: lines[:60] + ["NaN"] + lines[61:]),
    ("huge", lambda lines: lines[:60] + ["6.4e163"] + lines[61:]),
    ("dropped", lambda lines: lines[:70] + lines[71:]),
    ("repeated", lambda lines: lines[:70] + [lines[70]] + lines[70:]),
    ("count", lambda lines: [("12" if ln == "11" else ln) for ln in lines]),
]


@pytest.mark.parametrize("case", [c[0] for c in CLI_CASES])
def test_cli_contract_on_damaged_files(fixtures_dir, tmp_path, cli, case):
    edit = dict(CLI_CASES)[case]
    lines = (fixtures_dir / "c2rcc" / NETS[0]).read_text().split("\n")
    src = tmp_path / "damaged.net"
    src.write_text("\n".join(edit(lines)))
    out = tmp_path / "out" / "m.keras"
    code, stdout, err = cli("import", src, "-o", out, "--samples", "20")
    assert code == 2, (stdout, err)
    assert err.startswith(f"error: {src}: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "Warning" not in err
    assert not out.exists() and not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.net"]


def test_cli_imports_a_harmlessly_damaged_file(fixtures_dir, tmp_path, cli):
    lines = (fixtures_dir / "c2rcc" / NETS[0]).read_text().split("\n")
    lines[2] = lines[2][:5] + "\x7f" + lines[2][6:]  # a flipped byte in the free text
    src = tmp_path / "damaged.net"
    src.write_text("\n".join(lines))
    out = tmp_path / "m.keras"
    code, stdout, err = cli("import", src, "-o", out, "--samples", "20")
    assert code == 0 and err == "", err
    assert "passed" in stdout and out.exists()
