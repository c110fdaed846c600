"""The fast fit path against Keras's own fit, on tiny generated data.

Both engines run the same Keras train step on the same batches (the fast path mirrors
Keras's per-epoch permutation and the layers' seed generators), so most comparisons
below are of numbers, not just of behaviour.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from mlnnkit import fastfit, train
from mlnnkit.callbacks import AtomicModelCheckpoint
from mlnnkit.errors import UserError
from tests.helpers import make_regression_csv, regression_config, write_config

REPO = Path(__file__).resolve().parents[1]
ENGINES = ["fast", "keras"]


@pytest.fixture(autouse=True)
def _own_compile_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MLNNKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "xla-cache"))


def _data(n=100, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    w = rng.normal(size=(d, k))
    y = np.argmax(x @ w + 0.3 * rng.normal(size=(n, k)), axis=1).astype("int32")
    return x, y


def _classifier(seed=0, dropout=0.0, d=6, k=3, lr=0.01, optimizer="adam"):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((d,)), keras.layers.Dense(16, activation="relu")]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(k, activation="softmax"))
    model = keras.Sequential(layers)
    opt = keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": lr}})
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _fit(engine, model, x, y, **kw):
    kw.setdefault("verbose", 0)
    kw.setdefault("batch_size", 32)
    res = train.fit(model, x, y, engine=engine, **kw)
    assert res.engine == engine
    return res


def _weights(model):
    return [np.asarray(w) for w in model.get_weights()]


def _assert_same_weights(a, b, atol=2e-5):
    assert len(a) == len(b)
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(wa, wb, atol=atol, rtol=1e-4)


# ---------------------------------------------------------------- numeric equivalence
def test_one_epoch_matches_keras_fit_without_shuffle():
    # 100 rows, batch 32: three full batches and a last batch of 4 (not dropped)
    x, y = _data(100)
    results = {}
    for engine in ENGINES:
        model = _classifier(seed=3)
        res = _fit(engine, model, x, y, epochs=1, shuffle=False)
        results[engine] = (_weights(model), res.history, int(model.optimizer.iterations.numpy()))
    (wf, hf, itf), (wk, hk, itk) = results["fast"], results["keras"]
    assert itf == itk == 4
    _assert_same_weights(wf, wk, atol=1e-6)
    assert hf.keys() == hk.keys() == {"loss", "accuracy"}
    for key in hk:
        np.testing.assert_allclose(hf[key], hk[key], rtol=1e-6, atol=1e-7)


def test_shuffle_and_dropout_follow_the_same_seeded_streams():
    x, y = _data(150)
    runs = {}
    for engine in ENGINES:
        model = _classifier(seed=11, dropout=0.3)
        res = _fit(engine, model, x, y, epochs=3, shuffle=True, validation_data=_data(40, seed=5))
        runs[engine] = (_weights(model), res.history)
    _assert_same_weights(runs["fast"][0], runs["keras"][0])
    for key, vals in runs["keras"][1].items():
        np.testing.assert_allclose(runs["fast"][1][key], vals, rtol=1e-4, atol=1e-5)
    # and the seed matters: another seed trains differently
    other = _classifier(seed=12, dropout=0.3)
    _fit("fast", other, x, y, epochs=3, shuffle=True)
    assert not np.allclose(_weights(other)[0], runs["fast"][0][0])


def test_dropout_is_active_in_training_only():
    x, y = _data(64)
    model = _classifier(seed=1, dropout=0.5)
    _fit("fast", model, x, y, epochs=1)
    a = np.asarray(model(x[:8], training=False))
    b = np.asarray(model.predict(x[:8], verbose=0))
    np.testing.assert_allclose(a, b, atol=1e-6)


# ------------------------------------------------------------------ epoch callbacks
def _overfitting_data():
    # Few noisy training rows and a separate validation set: the validation loss falls,
    # then rises, so early stopping and best-model checkpointing have something to do.
    x, y = _data(48, seed=2)
    flip = np.random.default_rng(0).random(len(y)) < 0.3
    y = np.where(flip, (y + 1) % 3, y).astype("int32")
    return (x, y), _data(200, seed=9)


@pytest.fixture(scope="module")
def early_stopping_runs():
    (x, y), val = _overfitting_data()
    out = {}
    for engine in ENGINES:
        model = _classifier(seed=4, lr=0.05)
        es = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=3, restore_best_weights=True, verbose=0
        )
        res = _fit(engine, model, x, y, epochs=60, validation_data=val, callbacks=[es])
        out[engine] = (model, es, res)
    return out


def test_early_stopping_same_epoch_and_restored_weights(early_stopping_runs):
    (mf, esf, rf), (mk, esk, rk) = early_stopping_runs["fast"], early_stopping_runs["keras"]
    assert 0 < esk.stopped_epoch < 59, "the setup must make early stopping trigger"
    assert esf.stopped_epoch == esk.stopped_epoch
    assert esf.best_epoch == esk.best_epoch
    assert rf.epochs == rk.epochs == esk.stopped_epoch + 1
    _assert_same_weights(_weights(mf), _weights(mk))
    # the restored weights are the best epoch's: evaluating them gives the best val_loss
    best = min(rk.history["val_loss"])
    assert rk.history["val_loss"][esk.best_epoch] == pytest.approx(best)
    (_, _), (vx, vy) = _overfitting_data()
    for m in (mf, mk):
        got = m.evaluate(vx, vy, batch_size=32, verbose=0, return_dict=True)["loss"]
        assert got == pytest.approx(best, rel=1e-4)


def test_best_model_checkpoint_is_the_same_on_both_engines(tmp_path):
    (x, y), (vx, vy) = _overfitting_data()
    best = {}
    for engine in ENGINES:
        model = _classifier(seed=4, lr=0.05)
        path = tmp_path / engine / "best.keras"
        ck = AtomicModelCheckpoint(path, monitor="val_loss")
        res = _fit(engine, model, x, y, epochs=20, validation_data=(vx, vy), callbacks=[ck])
        assert path.exists()
        assert not list(path.parent.glob(".tmp-*")), "no temporary file left behind"
        loaded = keras.saving.load_model(path)
        val_loss = loaded.evaluate(vx, vy, batch_size=32, verbose=0, return_dict=True)["loss"]
        assert val_loss == pytest.approx(min(res.history["val_loss"]), rel=1e-4)
        best[engine] = _weights(loaded)
        assert int(np.argmin(res.history["val_loss"])) < 19, "best must not be the last epoch"
    _assert_same_weights(best["fast"], best["keras"])


def test_learning_rate_schedule_and_reduce_on_plateau(tmp_path):
    x, y = _data(96)
    val = _data(64, seed=3)
    out = {}
    for engine in ENGINES:
        keras.utils.set_random_seed(7)
        sched = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.7)
        model = _classifier(seed=7)
        model.compile(
            optimizer=keras.optimizers.Adam(sched),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        _fit(engine, model, x, y, epochs=4, validation_data=val)
        lr_sched = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))

        # ReduceLROnPlateau changes optimizer.learning_rate between epochs
        model2 = _classifier(seed=8, lr=0.02)
        rl = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)
        res2 = _fit(engine, model2, x, y, epochs=4, validation_data=val, callbacks=[rl])
        out[engine] = (lr_sched, _weights(model), res2.history, _weights(model2))
    (sf, wf, hf, w2f), (sk, wk, hk, w2k) = out["fast"], out["keras"]
    steps = 4 * 3
    assert sf == pytest.approx(sk, rel=1e-6)
    assert sk == pytest.approx(0.05 * 0.7 ** (steps / 2), rel=1e-5)
    _assert_same_weights(wf, wk)
    # logged: the rate each epoch trained with; halved after every epoch but the first
    np.testing.assert_allclose(hf["learning_rate"], [0.02, 0.02, 0.01, 0.005], rtol=1e-6)
    np.testing.assert_allclose(hf["learning_rate"], hk["learning_rate"], rtol=1e-6)
    np.testing.assert_allclose(hf["loss"], hk["loss"], rtol=1e-4)
    _assert_same_weights(w2f, w2k)


def test_learning_rate_scheduler_callback_and_stop_training():
    x, y = _data(64)

    class StopAfter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                self.model.stop_training = True

    hist = {}
    for engine in ENGINES:
        model = _classifier(seed=2)
        lrs = keras.callbacks.LearningRateScheduler(lambda e: 0.01 / (e + 1))
        res = _fit(engine, model, x, y, epochs=10, callbacks=[lrs, StopAfter()])
        hist[engine] = res.history
        assert res.epochs == 3
    np.testing.assert_allclose(hist["fast"]["learning_rate"], [0.01, 0.005, 0.01 / 3], rtol=1e-6)
    np.testing.assert_allclose(hist["fast"]["loss"], hist["keras"]["loss"], rtol=1e-5)


def test_progress_line_per_epoch(capsys):
    x, y = _data(100)
    model = _classifier()
    _fit("fast", model, x, y, epochs=2, verbose=2, validation_data=_data(20, seed=1))
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("4/4 - ")]
    assert len(lines) == 2, out
    for key in ("accuracy:", "loss:", "val_accuracy:", "val_loss:"):
        assert key in lines[0]


# ------------------------------------------------------------------------ resume
_DRIVER = textwrap.dedent(
    """
    import sys, time, keras
    from mlnnkit.config import load_config
    from mlnnkit import train

    class Slow(keras.callbacks.Callback):  # epoch-level only: the fast path runs it
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(float(sys.argv[3]))

    class Seen(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            print(f"began epoch {epoch}", flush=True)

    cfg = load_config(sys.argv[1])
    res = train.run(cfg, sys.argv[2], verbose=0, extra_callbacks=[Slow(), Seen()])
    print("engine", res.metrics["engine"], flush=True)
    """
)


def _backed_up(run_dir: Path) -> int:
    meta = run_dir / ".resume" / "backup" / "training_metadata.json"
    try:
        return json.loads(meta.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.parametrize("engine", ENGINES)
def test_resume_after_kill(tmp_path, engine):
    csv = make_regression_csv(tmp_path / "d.csv", n=300)
    cfg = write_config(
        tmp_path / "c.toml", regression_config(csv, **{"fit.epochs": 10, "fit.engine": engine})
    )
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, str(driver), str(cfg), str(run_dir)]
    proc = subprocess.Popen(cmd + ["0.4"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while _backed_up(run_dir) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _backed_up(run_dir)
    assert 3 <= done < 10, f"the kill did not land mid-run ({done} epochs backed up)"
    assert not (run_dir / "metrics.json").exists()

    out = subprocess.run(
        cmd + ["0"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stdout[-1500:] + out.stderr[-1500:]
    began = [int(ln.split()[-1]) for ln in out.stdout.splitlines() if ln.startswith("began epoch")]
    assert began == list(range(done, 10)), out.stdout
    assert f"engine {engine}" in out.stdout
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["engine"] == engine and m["epochs"] == 10
    hist = pd.read_csv(run_dir / "history.csv")
    assert list(hist["epoch"]) == list(range(1, 11))
    assert not (run_dir / ".resume").exists()


# ----------------------------------------------------------------------- fallback
def test_unsupported_layer_falls_back_to_keras():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6, 1)), keras.layers.Conv1D(2, 3), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(40)
    assert "Conv1D" in fastfit.unsupported_reason(model, [])
    assert fastfit.select(model, []) is None
    res = train.fit(model, x[..., None], y, epochs=1, verbose=0, engine="auto")
    assert res.engine == "keras" and len(res.history["loss"]) == 1
    with pytest.raises(UserError, match="Conv1D"):
        train.fit(model, x[..., None], y, epochs=1, verbose=0, engine="fast")


def test_batch_level_callback_falls_back_and_sees_every_batch():
    class CountBatches(keras.callbacks.Callback):
        n = 0

        def on_train_batch_end(self, batch, logs=None):
            self.n += 1

    class EpochOnly(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            pass

    x, y = _data(100)
    model = _classifier()
    assert fastfit.select(model, [EpochOnly()]) is not None
    assert fastfit.select(model, [keras.callbacks.TerminateOnNaN()]) is None
    assert fastfit.select(model, [keras.callbacks.BackupAndRestore("b", save_freq=5)]) is None
    counter = CountBatches()
    res = train.fit(model, x, y, epochs=2, verbose=0, callbacks=[counter])
    assert res.engine == "keras"
    assert counter.n == 2 * 4


def test_engine_recorded_in_metrics(tmp_path, cli):
    csv = make_regression_csv(tmp_path / "d.csv", n=120)
    for engine, layers in (
        ("fast", [{"type": "Dense", "units": 8, "activation": "relu"}, {"type": "Dense", "units": 1}]),
        ("keras", [{"type": "Dense", "units": 8}, {"type": "GaussianDropout", "rate": 0.1}, {"type": "Dense", "units": 1}]),
    ):
        cfg = write_config(
            tmp_path / f"{engine}.toml",
            regression_config(csv, **{"fit.epochs": 2, "model.layers": layers}),
        )
        code, _out, err = cli("train", cfg, "--out", tmp_path / engine)
        assert code == 0, err
        m = json.loads((tmp_path / engine / "metrics.json").read_text())
        assert m["engine"] == engine
        if engine == "keras":  # and why, for a user wondering why it was slow
            assert "GaussianDropout" in m["engine_reason"]
        else:
            assert "engine_reason" not in m


def test_normalization_flatten_and_functional_models_run_fast():
    x, y = _data(90, d=8)
    x = x.reshape(90, 2, 4) * 5 + 3
    outs = {}
    for engine in ENGINES:
        keras.utils.set_random_seed(5)
        inp = keras.Input((2, 4))
        norm = keras.layers.Normalization(axis=None)
        norm.adapt(x)
        h = keras.layers.Flatten()(norm(inp))
        h = keras.layers.Dense(8, activation="tanh")(h)
        model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
        model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        assert fastfit.unsupported_reason(model, []) is None
        _fit(engine, model, x, y, epochs=2, shuffle=False)
        outs[engine] = _weights(model)
    _assert_same_weights(outs["fast"], outs["keras"])


def test_mlnnkit_scaling_layers_run_fast_and_float64_falls_back():
    from mlnnkit import layers as ml
    for cls in (ml.InputScaling, ml.OutputScaling):
        assert cls in fastfit.supported_layer_classes()
    rng = np.random.default_rng(0)
    x = rng.uniform([0, 10], [5, 30], size=(70, 2)).astype("float32")
    y = (x[:, :1] * 2 + x[:, 1:] / 10).astype("float32")
    out = {}
    for engine in ENGINES:
        keras.utils.set_random_seed(3)
        inp = keras.Input((2,))
        h = ml.InputScaling([0, 10], [5, 30], names=["a", "b"])(inp)
        h = keras.layers.Dense(6, activation="tanh")(h)
        h = keras.layers.Dense(1, activation="tanh")(h)
        model = keras.Model(inp, ml.OutputScaling([0.0], [13.0])(h))
        model.compile(optimizer="adam", loss="mse", metrics=["mae"])
        res = _fit(engine, model, x, y, epochs=3, validation_data=(x[:20], y[:20]))
        out[engine] = (_weights(model), res.history)
    _assert_same_weights(out["fast"][0], out["keras"][0])
    np.testing.assert_allclose(out["fast"][1]["val_mae"], out["keras"][1]["val_mae"], rtol=1e-4)
    # a float64 layer (legacy networks can be) is left to Keras's fit
    with warnings.catch_warnings():  # JAX warns that float64 needs x64 mode
        warnings.simplefilter("ignore")
        m64 = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, dtype="float64")])
        m64.compile(optimizer="sgd", loss="mse")
    assert "float64" in fastfit.unsupported_reason(m64, [])


def test_compiled_program_is_reused_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLNNKIT_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "xla"
    x, y = _data(100)  # 3 full batches and a partial one: two programs
    weights, counts = [], []
    for _ in range(2):
        model = _classifier(seed=21)
        _fit("fast", model, x, y, epochs=2)
        weights.append(_weights(model))
        counts.append(len(list(folder.glob("*.pkl"))))
    assert counts == [2, 2]  # the second fit loaded the first one's programs
    _assert_same_weights(weights[0], weights[1], atol=0)
    for entry in folder.glob("*.pkl"):  # damaged entries are recompiled, not fatal
        entry.write_bytes(b"not a program")
    model = _classifier(seed=21)
    _fit("fast", model, x, y, epochs=2)
    _assert_same_weights(_weights(model), weights[0], atol=0)
    monkeypatch.setenv("MLNNKIT_CACHE_DIR", "off")
    from mlnnkit import _compile_cache

    assert _compile_cache.cache_dir() is None
