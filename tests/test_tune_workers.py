"""Crash and concurrency: a tuning process killed with SIGKILL in the middle of a trial
and started again; two worker processes on one SQLite study."""

from __future__ import annotations

import os
import signal
import time

from _tune_data import load_study, mlnnkit_process, states, write_config


def _wait_for(pred, proc, timeout: float = 240.0, what: str = ""):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"worker ended before {what}: {proc.returncode}\n{out}\n{err}")
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_mid_trial_then_the_same_command_continues(tmp_path, cli):
    cfg = write_config(tmp_path, epochs=15, trials=3, batch_size=8)
    out = tmp_path / "out"
    storage = f"sqlite:///{out / 'study.db'}"
    proc = mlnnkit_process("tune", cfg, "--out", out)

    def mid_trial():
        # trials.csv is written after the first trial: the database is set up by then
        # (opening it while the worker creates its tables could race with it)
        if not (out / "trials.csv").exists():
            return None
        study = load_study(storage)
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state.name == "COMPLETE"]
        running = [t for t in trials if t.state.name == "RUNNING" and t.intermediate_values]
        return (done, running[0]) if done and running else None

    _, victim = _wait_for(mid_trial, proc, what="a trial in progress after a complete one")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    study = load_study(storage)
    assert states(study)[victim.number] == "RUNNING"  # what the killed process left behind
    kept = {t.number: (t.params, t.value) for t in study.get_trials() if t.state.name == "COMPLETE"}

    code, stdout, err = cli("tune", cfg, "--out", out)
    assert code == 0, err
    assert f"trial {victim.number}: FAIL (its worker stopped" in stdout
    study = load_study(storage)
    st = states(study)
    assert st[victim.number] == "FAIL"
    assert sum(s == "COMPLETE" for s in st.values()) == 3  # exactly the requested number
    assert set(st.values()) <= {"COMPLETE", "FAIL"} and list(st.values()).count("FAIL") == 1
    assert sorted(st) == list(range(len(st)))  # numbers 0..n-1, none repeated
    # the trials completed before the kill are kept as they were, not run again
    assert {n: v for n, v in ((t.number, (t.params, t.value)) for t in study.get_trials()) if n in kept} == kept
    assert len(st) == 4  # three complete + the killed one


def test_two_workers_share_one_sqlite_study(tmp_path):
    cfg = write_config(tmp_path, epochs=8, trials=4, batch_size=8)
    out = tmp_path / "out"
    out.mkdir()
    workers = [mlnnkit_process("tune", cfg, "--out", out) for _ in range(2)]
    results = [w.communicate(timeout=400) for w in workers]
    for w, (o, e) in zip(workers, results):
        assert w.returncode == 0, f"{o}\n{e}"
    study = load_study(f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == [0, 1, 2, 3]  # no number repeated, no surplus trial
    assert all(t.state.name == "COMPLETE" for t in trials)
    pids = {t.user_attrs["worker"].split("|")[3] for t in trials}
    assert pids == {str(w.pid) for w in workers}  # both did part of the work
    # every worker wrote the same final table
    assert (out / "trials.csv").read_text().count("COMPLETE") == 4


_OPEN_AT = """
import sys, time
from mlnnkit.tune._storage import open_storage
start = float(sys.argv[1])
for i, url in enumerate(sys.argv[2:]):
    time.sleep(max(0.0, start + 0.6 * i - time.time()))
    try:
        open_storage(url)
        print("ok", flush=True)
    except Exception as e:
        print(type(e).__name__, str(e).splitlines()[0][:200], flush=True)
"""


def test_workers_opening_a_new_storage_at_once_all_get_it(tmp_path):
    """Several workers started together on a new database: each RDBStorage creates the
    tables and inserts the schema version; the losers of that race (IntegrityError on
    alembic_version, seen as a traceback and exit 1 of `mlnnkit tune`) now try again.
    Four processes open six new SQLite databases at the same instants."""
    import subprocess
    import sys

    from conftest import REPO

    urls = [f"sqlite:///{tmp_path / f's{i}.db'}" for i in range(6)]
    start = time.time() + 8  # after every process has imported Optuna
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    procs = [
        subprocess.Popen([sys.executable, "-c", _OPEN_AT, str(start), *urls], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    lines = [line for out, _ in outs for line in out.splitlines()]
    assert len(lines) == 24, outs
    assert lines == ["ok"] * 24, [line for line in lines if line != "ok"]
