"""Issue 15: implausible weights refused at the door, a compile cache that trusts only your
own folder, one writer per run directory, and no pile-up of a killed run's temporary files.
The lock and the temporary files are tested with real processes killed by SIGKILL."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import make_regression_csv, regression_config, write_config

from mlnnkit import _atomic, _rundir, legacy
from mlnnkit.errors import UserError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}
MSI = "msi_complex_20200321_rw_rwnorm_27x7x27_28.0.net"


def _one_line_error(code, err, *needles):
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Warning" not in err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"


# ---- 1. plausibility at the door ------------------------------------------------------


@pytest.fixture
def damaged_ocsmart(fixtures_dir, tmp_path):
    path = tmp_path / "pace.h5"
    shutil.copy(fixtures_dir / "ocsmart" / "PACE_Lrc_aaNN.H5", path)
    with h5py.File(path, "r+") as f:
        w = f["Weights/Layer2"][()]
        w[3, 5] = 6.4e163  # what a flipped exponent byte gave in the issue
        f["Weights/Layer2"][...] = w
    return path


def test_a_huge_ocsmart_weight_is_refused_naming_the_dataset(cli, damaged_ocsmart, tmp_path):
    out = tmp_path / "m.keras"
    code, _, err = cli("import", damaged_ocsmart, "-o", out, "--samples", "20")
    _one_line_error(code, err, "Weights/Layer2", "6.4e+163", "index [3, 5]", "--allow-large-weights")
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))
    code, _, err = cli("inspect", damaged_ocsmart)
    _one_line_error(code, err, "Weights/Layer2")


def test_allow_large_weights_imports_in_float64_without_warnings(cli, damaged_ocsmart, tmp_path):
    out = tmp_path / "m.keras"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy RuntimeWarning would fail the import
        code, stdout, err = cli(
            "import", damaged_ocsmart, "-o", out, "--samples", "20", "--allow-large-weights"
        )
    assert code == 0, err
    assert err == ""
    assert "beyond float32's range; importing in float64" in stdout
    assert "wrote" in stdout and "(float64" in stdout and out.exists()
    with pytest.raises(UserError, match="beyond float32's range"):
        legacy.to_keras(legacy.read(damaged_ocsmart, allow_large_weights=True), "float32")


def test_a_huge_range_is_refused(fixtures_dir, tmp_path):
    path = tmp_path / "pace.h5"
    shutil.copy(fixtures_dir / "ocsmart" / "PACE_Lrc_aaNN.H5", path)
    with h5py.File(path, "r+") as f:
        a = f["Norm_in"][()]
        a[4, 1] = 3.1e200
        f["Norm_in"][...] = a
    with pytest.raises(UserError, match=r"Norm_in\[4\]: input 5 .*3\.1e\+200 is beyond 1e\+12"):
        legacy.read(path)
    assert legacy.read(path, allow_large_weights=True).input_scaling.maximum[4] == 3.1e200


def test_a_large_ffbp_weight_is_refused_naming_its_line(fixtures_dir, tmp_path, cli):
    lines = (fixtures_dir / "c2rcc" / MSI).read_text().split("\n")
    w1 = next(i for i, ln in enumerate(lines) if ln.startswith("wgt 1 "))
    lines[w1 + 9] = "-3.5e7"  # value 9 of block wgt 1
    path = tmp_path / "big.net"
    path.write_text("\n".join(lines))
    code, _, err = cli("import", path, "-o", tmp_path / "m.keras", "--samples", "20")
    _one_line_error(code, err, f"line {w1 + 1} (wgt 1)", "-3.5e+07", f"on line {w1 + 10}")
    assert "--allow-large-weights" in err
    # the limit is a parameter: a looser one reads it, and the import verifies in float64
    assert legacy.read(path, max_weight=1e8).weights[1].min() == -3.5e7
    model = legacy.load(path, dtype="float64", samples=50, allow_large_weights=True)
    assert model.count_params() > 0


def test_the_real_networks_are_far_inside_the_limits(fixtures_dir):
    for path in sorted((fixtures_dir / "c2rcc").glob("*.net")) + [
        fixtures_dir / "ocsmart" / "PACE_Lrc_aaNN.H5"
    ]:
        spec = legacy.read(path)
        biggest = max(float(np.abs(a).max()) for a in spec.weights + spec.biases)
        assert biggest < legacy.MAX_WEIGHT / 10, (path.name, biggest)


# ---- 3. the compile cache trusts only your own folder --------------------------------


class _Plant:
    """A pickle that, when loaded, makes a folder: proof that the entry was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _lowered():
    import jax
    import jax.numpy as jnp

    return jax.jit(lambda x: x * 2.0 + 1.0).lower(jnp.ones(3, dtype=jnp.float32))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    from mlnnkit import _compile_cache

    base = tmp_path / "cache"
    monkeypatch.setenv("MLNNKIT_CACHE_DIR", str(base))
    monkeypatch.setattr(_compile_cache, "_noted", set())
    return _compile_cache, base / "xla"


def test_a_planted_entry_in_a_world_writable_folder_is_not_loaded(cache, tmp_path, capsys):
    import jax.numpy as jnp

    cc, folder = cache
    folder.mkdir(parents=True)
    os.chmod(folder, 0o777)
    lowered = _lowered()
    marker = tmp_path / "the-planted-pickle-ran"
    entry = folder / f"{cc.cache_key(lowered)}.pkl"
    entry.write_bytes(pickle.dumps(_Plant(marker)))
    capsys.readouterr()
    for _ in range(2):
        compiled = cc.compile_cached(lowered)
        np.testing.assert_allclose(np.asarray(compiled(jnp.ones(3, jnp.float32))), 3.0)
    assert not marker.exists(), "the entry of an untrusted folder was unpickled"
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # said once, not per program
    assert f"not using the compiled-program cache {folder}" in err
    assert "writable by group or others (mode 0777)" in err and "compiling instead" in err
    assert sorted(p.name for p in folder.iterdir()) == [entry.name]  # nothing stored there

    # The same entry in a folder of one's own is loaded (so the check above can fail).
    os.chmod(folder, 0o700)
    os.chmod(entry, 0o600)
    cc.compile_cached(lowered)
    assert marker.exists()


def test_an_entry_writable_by_others_is_not_loaded(cache, tmp_path, capsys):
    cc, folder = cache
    lowered = _lowered()
    cc.compile_cached(lowered)  # creates the folder and a real entry
    entry = folder / f"{cc.cache_key(lowered)}.pkl"
    marker = tmp_path / "ran"
    entry.write_bytes(pickle.dumps(_Plant(marker)))
    os.chmod(entry, 0o666)
    capsys.readouterr()
    cc.compile_cached(lowered)
    assert not marker.exists()
    assert "an entry" in capsys.readouterr().err
    assert (entry.stat().st_mode & 0o777) == 0o600  # replaced by a program of our own


def test_folder_and_entries_are_private(cache):
    cc, folder = cache
    cc.compile_cached(_lowered())
    assert (folder.stat().st_mode & 0o777) == 0o700
    entries = list(folder.glob("*.pkl"))
    assert entries and all((p.stat().st_mode & 0o777) == 0o600 for p in entries)


def test_a_folder_owned_by_someone_else_is_not_used(cache, tmp_path):
    cc, folder = cache
    folder.mkdir(parents=True, mode=0o700)
    try:
        os.chown(folder, 54321, -1)
    except PermissionError:
        pytest.skip("changing a folder's owner needs root")
    assert "owned by uid 54321" in cc.folder_problem(folder)
    lowered = _lowered()
    marker = tmp_path / "ran"
    entry = folder / f"{cc.cache_key(lowered)}.pkl"
    entry.write_bytes(pickle.dumps(_Plant(marker)))
    cc.compile_cached(lowered)
    assert not marker.exists()


# ---- 4. one writer per run directory --------------------------------------------------

HOLDER = """
import sys, time
from mlnnkit import _atomic, _rundir
with _rundir.lock(sys.argv[1], "train"):
    with _atomic.atomic_path(sys.argv[1] + "/model.keras") as tmp:
        tmp.write_bytes(b"half a model")
        print(tmp, flush=True)
        time.sleep(300)
"""


def _start(script, *args):
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    assert line, proc.stderr.read()
    return proc, Path(line)


def _kill9(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_second_train_on_a_run_directory_is_refused_and_a_stale_lock_taken_over(tmp_path, cli):
    csv = make_regression_csv(tmp_path / "d.csv", n=120)
    cfg = write_config(tmp_path / "c.toml", regression_config(csv, **{"fit.epochs": 2}))
    run = tmp_path / "run"
    proc, tmp = _start(HOLDER, run)
    try:
        code, _, err = cli("train", cfg, "--out", run)
        _one_line_error(code, err, f"{run} is in use by process {proc.pid} (started at ")
        assert "running mlnnkit train" in err
        assert tmp.exists() and not (run / "model.keras").exists()  # nothing touched
    finally:
        _kill9(proc)
    assert (run / _rundir.LOCK_NAME).exists() and tmp.exists()  # what kill -9 leaves
    code, _, err = cli("train", cfg, "--out", run)
    assert code == 0, err
    assert f"was locked by process {proc.pid}" in err and "taking the lock over" in err
    assert f"killed process {proc.pid} left beside {run / 'model.keras'}" in err
    assert not tmp.exists() and (run / "model.keras").exists()
    assert not (run / _rundir.LOCK_NAME).exists()
    assert not list(run.glob(".tmp-*"))


def test_transfer_takes_the_lock_first(tmp_path):
    from mlnnkit import transfer

    proc, _ = _start(HOLDER, tmp_path / "t")
    try:
        with pytest.raises(UserError, match=f"is in use by process {proc.pid} "):
            transfer.run(tmp_path / "no-base.keras", tmp_path / "no-images", tmp_path / "t")
    finally:
        _kill9(proc)


def test_finetune_takes_the_lock_first(tmp_path):
    from mlnnkit import finetune

    proc, _ = _start(HOLDER, tmp_path / "f")
    try:
        with pytest.raises(UserError, match=f"is in use by process {proc.pid} "):
            finetune.run(tmp_path / "no-model.keras", tmp_path / "no-data.csv", tmp_path / "f")
    finally:
        _kill9(proc)
    # the holder is dead: the lock is free again (and the missing model is the problem now)
    with pytest.raises(UserError, match="no-model.keras"):
        finetune.run(tmp_path / "no-model.keras", tmp_path / "no-data.csv", tmp_path / "f")


def test_the_lock_in_one_process(tmp_path):
    run = tmp_path / "r"
    with (
        _rundir.lock(run, "finetune"),
        pytest.raises(UserError, match=rf"in use by process {os.getpid()} \(started at "),
        _rundir.lock(run),
    ):
        pass
    assert not (run / _rundir.LOCK_NAME).exists()
    with pytest.raises(RuntimeError), _rundir.lock(tmp_path / "new"):
        raise RuntimeError("the run failed before writing anything")
    assert not (tmp_path / "new").exists()  # a folder the lock made and nobody used


# ---- 5. a killed run's temporary files do not pile up ---------------------------------

WRITER = """
import sys, time
from mlnnkit import _atomic
with _atomic.atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "wb") as f:
        f.write(b"x" * 300_000)
        f.flush()
        print(tmp, flush=True)
        time.sleep(300)
"""


def test_export_removes_the_temporary_files_of_killed_processes_only(
    fixtures_dir, tmp_path, cli
):
    model = tmp_path / "m.keras"
    code, _, err = cli("import", fixtures_dir / "c2rcc" / MSI, "-o", model, "--samples", "20")
    assert code == 0, err
    out = tmp_path / "out" / "model.net"
    killed = [_start(WRITER, out) for _ in range(2)]
    alive, alive_tmp = _start(WRITER, out)
    try:
        for proc, _ in killed:
            _kill9(proc)
        assert all(t.exists() for _, t in killed)
        code, _, err = cli("export", model, "-o", out, "--samples", "20")
        assert code == 0, err
        notes = [ln for ln in err.splitlines() if ln.startswith("note: removed")]
        assert len(notes) == 1 and "note: removed 2 temporary files (585.9 KB)" in notes[0]
        assert all(str(p.pid) in notes[0] for p, _ in killed)
        assert not any(t.exists() for _, t in killed)
        assert alive_tmp.exists(), "the temporary file of a live process was removed"
        assert out.exists()
        # the next write says nothing: nothing stale is left
        code, _, err = cli("export", model, "-o", out, "--samples", "20")
        assert code == 0 and "note: removed" not in err
    finally:
        _kill9(alive)


def test_temporary_names_say_whose_they_are(tmp_path):
    tmp = _atomic._tmp_name(tmp_path / "scene.nc")
    assert tmp.name.startswith(f".tmp-{os.getpid()}-{_atomic.host_tag()}-")
    assert tmp.name.endswith("-scene.nc")
    # another host's files in a shared folder are not this host's to judge
    other = tmp_path / ".tmp-999999-zzzzzz-abcdef-scene.nc"
    other.write_text("x")
    foreign = tmp_path / f".tmp-999999-{'0' * 6 if _atomic.host_tag() != '0' * 6 else '1' * 6}-abcdef-scene.nc"
    foreign.write_text("x")
    assert _atomic.remove_stale_temporaries(tmp_path / "scene.nc") == []
    assert other.exists() and foreign.exists()
