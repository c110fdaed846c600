"""Issue #17, the smaller ones on the training side: the offline keras.applications error
of `transfer`, finetune's range and NaN messages, finetune -v and Ctrl-C."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import pytest

from mlnnkit import transfer as tl
from mlnnkit.errors import UserError

MOBILENET_NO_TOP = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def test_offline_application_error_is_whole_and_suggests_weights_none(monkeypatch, capsys):
    import warnings

    from keras.src.backend import config as keras_config

    if (Path(keras_config.keras_home()) / "models" / MOBILENET_NO_TOP).exists():
        pytest.skip("the MobileNetV2 weights are cached here: nothing to download")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # offline, for sure: nothing listens
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        with pytest.raises(UserError) as err:
            tl.application_base("MobileNetV2", (32, 32), "imagenet")
    # Keras's "Weights for input shape (224, 224) will be loaded as the default" (no
    # ImageNet weights for 32x32) reaches the user as one note of ours, not a UserWarning
    assert not [w for w in leaked if "loaded as the default" in str(w.message)]
    assert "note: --base MobileNetV2: Keras has ImageNet weights for a few square image " \
        "sizes only; for 32x32 it loads those of (224, 224)" in capsys.readouterr().err
    msg = str(err.value)
    assert "--weights none" in msg
    assert f"put {MOBILENET_NO_TOP} in ~/.keras/models/" in msg  # the whole file name
    reason = msg.split("cannot download its ImageNet weights (", 1)[1].split(");", 1)[0]
    assert "URL fetch failure" not in reason and "[Errno" in reason, reason
    keras.backend.clear_session()


# ------------------------------------------------------------------ finetune's messages
def test_range_warning_names_the_data_column_and_counts_rows_from_1(tmp_path, cli):
    import numpy as np
    import pandas as pd

    from mlnnkit import legacy
    from tests.test_finetune_legacy import shifted_rows, write_ocsmart

    net = write_ocsmart(tmp_path / "net.h5")
    model = legacy.load(net)
    mins, maxs, own = legacy.input_ranges(model)
    x, y = shifted_rows(model, 100)
    x[[2, 5, 9], 3] = maxs[3] + 0.5  # data rows 3, 6 and 10 above the range of the 4th input
    df = pd.DataFrame(x, columns=[f"Rrs_{j + 1}" for j in range(7)])
    df["chl"] = y[:, 0]
    df.to_csv(tmp_path / "d.csv", index=False)
    code, _, err = cli(
        "finetune", net, "--data", tmp_path / "d.csv", "--inputs", "Rrs_*", "--targets", "chl",
        "-o", tmp_path / "o", "--epochs", "1",
    )
    assert code == 0, err
    line = next(ln for ln in err.splitlines() if "input ranges" in ln)
    assert "3.0% of rows (3 of 100)" in line and "(first: data row 3)" in line
    name = "Rrs_4" if str(own[3]) == "Rrs_4" else f"Rrs_4 ({own[3]})"
    assert f"{name} 3.0% [{mins[3]:.4g}, {maxs[3]:.4g}]" in line, line
    assert np.isfinite(maxs[3])


# ------------------------------------------------------------------------------ Ctrl-C
def _interrupt_when(cmd, ready, timeout: float = 240):
    """Run `cmd`, send SIGINT once `ready(stdout so far)` is true; (code, stdout, stderr)."""
    import signal
    import subprocess
    import threading
    import time

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True),
        threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True),
    ]
    for t in readers:
        t.start()
    deadline = time.time() + timeout
    while not ready("".join(out)) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the command ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    for t in readers:
        t.join(timeout=10)
    return proc.returncode, "".join(out), "".join(err)


def test_ctrl_c_in_finetune_verbose_is_not_lost(tmp_path):
    import sys

    import numpy as np

    from tests.test_finetune import shifted, tiny_net

    m = tiny_net()
    m.compile("adam", "mse")
    m.save(tmp_path / "net.keras")
    x, y = shifted(3000)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cmd = [
        sys.executable, "-m", "mlnnkit", "finetune", str(tmp_path / "net.keras"), "--data",
        str(tmp_path / "d.npz"), "-o", str(tmp_path / "o"), "-v", "--epochs", "100000",
        "--patience", "100000", "--batch-size", "8",
    ]
    code, out, err = _interrupt_when(cmd, lambda so_far: "Epoch 3/" in so_far)
    assert code == 130, (code, out[-500:], err[-2000:])
    assert err == "error: interrupted\n", err[-2000:]
    o = tmp_path / "o"
    assert not o.exists() or list(o.iterdir()) == []  # nothing half: no outputs at all


def test_ctrl_c_inside_a_gc_callback_still_stops_predict():
    """Raised wherever the interpreter is, a KeyboardInterrupt can land in a garbage-
    collector callback (JAX registers one), which swallows it: `mlnnkit predict` then ran
    to its end. Under `deferred` (as the CLI runs predict) Ctrl-C only sets a flag, and
    the block loop raises it at its next check."""
    import gc
    import signal

    import numpy as np

    from mlnnkit import _interrupt
    from mlnnkit.predict import blocks_of, predict_stream

    net = keras.Sequential([keras.Input((7,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    x = np.random.default_rng(0).normal(size=(100_000, 7)).astype("float32")
    fired: list[int] = []

    def ctrl_c_in_callback(phase, info):
        if phase == "start" and not fired:
            fired.append(1)
            os.kill(os.getpid(), signal.SIGINT)  # its handler runs inside this callback
            sum(range(1000))

    written: list[int] = []

    def write(start, y):
        written.append(start)
        gc.collect()

    with _interrupt.watched(), _interrupt.deferred():
        gc.callbacks.append(ctrl_c_in_callback)
        try:
            with pytest.raises(KeyboardInterrupt):
                predict_stream(net, blocks_of(x, 1000), write)
        finally:
            gc.callbacks.remove(ctrl_c_in_callback)
    assert fired and len(written) < 100  # stopped at the next check, not at the end


def test_ctrl_c_in_predict_is_one_line_and_leaves_no_output(tmp_path):
    import sys

    import numpy as np

    m = keras.Sequential([keras.Input((7,)), keras.layers.Dense(64, activation="tanh"), keras.layers.Dense(1)])
    m.save(tmp_path / "net.keras")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(4_000_000, 7)).astype("float32"))
    out_dir = tmp_path / "pred"
    out_dir.mkdir()
    cmd = [
        sys.executable, "-m", "mlnnkit", "predict", str(tmp_path / "net.keras"),
        str(tmp_path / "x.npy"), "-o", str(out_dir / "y.npy"),
    ]
    # the output is being written (under its temporary name): interrupt now
    code, out, err = _interrupt_when(cmd, lambda _: bool(list(out_dir.glob(".tmp-*"))))
    assert code == 130, (code, out[-500:], err[-2000:])
    assert err == "error: interrupted\n", err  # not "RuntimeError: wrote 0 rows of ..."
    assert list(out_dir.iterdir()) == []  # no output, no temporary file
