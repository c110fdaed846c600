"""Issue #17 (tune side): a study remembers its fixed configuration; Ctrl-C stops a worker
with one line, exit 130, no Optuna failure dump, and the stopped trial queued again."""

from __future__ import annotations

import signal
import threading
import time

from _tune_data import load_study, mlnnkit_process, states, write_config


def test_continuing_a_study_with_another_fixed_config_is_refused(tmp_path, cli):
    out = tmp_path / "out"
    cfg = write_config(tmp_path, epochs=2, trials=1)
    code, _, err = cli("tune", cfg, "--out", out)
    assert code == 0, err

    cfg = write_config(tmp_path, epochs=3, trials=2)
    code, _, err = cli("tune", cfg, "--out", out)
    assert code == 2 and err.count("\n") == 1, err
    assert "another fixed configuration" in err and "fit.epochs: 2 -> 3" in err
    assert "--study" in err
    study = load_study(f"sqlite:///{out / 'study.db'}")
    assert list(states(study).values()) == ["COMPLETE"]  # nothing was run with epochs = 3

    # more trials of the same fixed config: accepted ([tune] itself may change)
    cfg = write_config(tmp_path, epochs=2, trials=2)
    code, _, err = cli("tune", cfg, "--out", out)
    assert code == 0, err
    assert sorted(states(load_study(f"sqlite:///{out / 'study.db'}")).values()) == ["COMPLETE"] * 2


def test_ctrl_c_mid_trial_is_one_line_and_the_trial_runs_again(tmp_path):
    # trials long enough (4000 epochs) that a poll of the study sees one running (with
    # 400, one full-suite run found none to interrupt)
    cfg = write_config(tmp_path, epochs=4000, trials=3, batch_size=8)
    out = tmp_path / "out"
    storage = f"sqlite:///{out / 'study.db'}"
    proc = mlnnkit_process("tune", cfg, "--out", out)
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    reader.start()
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if not (out / "study.db").exists():
            continue
        try:
            trials = load_study(storage).get_trials(deepcopy=False)
        except Exception:  # noqa: BLE001, S112 - the worker is still creating the tables
            continue
        running = [t for t in trials if t.state.name == "RUNNING" and t.intermediate_values]
        victim = running[0] if running else None
    assert victim is not None and proc.poll() is None, (
        f"no trial in progress to interrupt (exit code {proc.poll()})", "".join(err_lines)[-3000:]
    )
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    proc.stdout.close()
    err = "".join(err_lines)
    assert proc.returncode == 130, err[-3000:]
    assert err.count("\n") == 1, err[-3000:]  # no Optuna "Trial 0 failed ..." traceback
    assert err.startswith(f"error: interrupted; trial {victim.number} was stopped"), err
    assert "run the same command again to continue it" in err

    study = load_study(storage)
    trials = study.get_trials(deepcopy=False)
    assert trials[victim.number].state.name == "FAIL"
    queued = [t for t in trials if t.state.name == "WAITING"]
    assert len(queued) == 1
    assert queued[0].system_attrs["fixed_params"] == victim.params  # what enqueue_trial keeps
