"""A study on a real PostgreSQL server started by the test (Debian's postgresql package;
.ci/run installs it): two workers, one in this process and one child process, share it."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from _tune_data import load_study, mlnnkit_process, write_config


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on a unix socket in a temporary folder."""
    pytest.importorskip("psycopg2", reason="psycopg2 (psycopg2-binary) is not installed")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; apt install postgresql")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="mlnnkit-pg-"))
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the postgres user
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    port = "5432"  # only a unix socket in our own folder: no clash with other servers

    def run(*cmd):
        return subprocess.run(
            [*as_user, *map(str, cmd)], capture_output=True, text=True, timeout=120, check=False
        )

    r = run(bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    if r.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {r.stderr.strip()[:300]}")
    opts = f"-k {root} -c listen_addresses='' -p {port} -F"
    r = run(bindir / "pg_ctl", "-D", data, "-o", opts, "-l", root / "log", "-w", "-t", "60", "start")
    if r.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {r.stderr}\n{log[-2000:]}")
    try:
        yield f"postgresql://postgres@/postgres?host={root}&port={port}"
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_on_a_postgresql_study(postgres_url, tmp_path, cli):
    cfg = write_config(tmp_path, epochs=6, trials=3, batch_size=8, name="pgstudy")
    other = mlnnkit_process("tune", cfg, "--out", tmp_path / "other", "--storage", postgres_url)
    code, _, err = cli("tune", cfg, "--out", tmp_path / "here", "--storage", postgres_url)
    _, o_err = other.communicate(timeout=400)
    assert code == 0, err
    assert other.returncode == 0, o_err

    study = load_study(postgres_url, "pgstudy")
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert all(t.state.name == "COMPLETE" for t in trials)
    # each worker's folder has the study's full table and a best.toml
    for folder in ("here", "other"):
        assert (tmp_path / folder / "trials.csv").read_text().count("COMPLETE") == 3
        assert f"trial {study.best_trial.number}" in (tmp_path / folder / "best.toml").read_text()
    # the same command again continues the study on the server: one more trial
    code, _, err = cli("tune", cfg, "--out", tmp_path / "here", "--storage", postgres_url,
                       "--trials", 4)
    assert code == 0, err
    assert sum(t.state.name == "COMPLETE" for t in load_study(postgres_url, "pgstudy").get_trials()) == 4
