"""`mlnnkit tune` in-process on tiny generated data: results folder, best.toml runnable by
`mlnnkit train` (giving the best trial's value again), continuing a study, errors that
leave the study as it was."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _tune_data import load_study, states, write_config

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A finished 3-trial study (run once for the tests of this module)."""
    from mlnnkit.cli import main

    folder = tmp_path_factory.mktemp("tune")
    cfg = write_config(folder, epochs=2, trials=3, compile_extra="learning_rate = 0.001")
    out = folder / "out"
    code = main(["tune", str(cfg), "--out", str(out)])
    assert code == 0
    return cfg, out


def test_results_folder(study_dir):
    _, out = study_dir
    study = load_study(f"sqlite:///{out / 'study.db'}")
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    # trial 0 is the config as written (its values lie in the space)
    assert trials[0].params == {
        "model.layers[0].units": 8, "compile.learning_rate": 0.001, "fit.batch_size": 32
    }
    assert trials[0].user_attrs["baseline"] is True and "baseline" not in trials[1].user_attrs

    df = pd.read_csv(out / "trials.csv")
    assert list(df.columns[:5]) == ["number", "state", "value", "duration_s", "epochs"]
    assert set(df.columns[5:]) == {"model.layers[0].units", "compile.learning_rate", "fit.batch_size"}
    assert df["number"].tolist() == [0, 1, 2]
    assert df["state"].tolist() == ["COMPLETE"] * 3
    assert np.allclose(df["value"], [t.value for t in trials])
    assert df["epochs"].tolist() == [2, 2, 2]
    assert (df["duration_s"] > 0).all()
    for t in trials:
        row = df[df.number == t.number].iloc[0]
        assert row["fit.batch_size"] == t.params["fit.batch_size"]
        assert row["model.layers[0].units"] % 4 == 0 and 4 <= row["model.layers[0].units"] <= 16

    best = json.loads((out / "best_model.json").read_text())
    assert best["trial"] == study.best_trial.number
    assert best["value"] == pytest.approx(study.best_value)
    for name in ("optimization_history.png", "param_importances.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert not list(out.glob(".tmp-*"))  # atomic writes left nothing behind


def test_best_toml_reproduces_the_best_trial(study_dir, cli, tmp_path):
    from mlnnkit.config import load_config
    from mlnnkit.data import load_data
    from mlnnkit.models import load_model
    from mlnnkit.train import evaluate

    _, out = study_dir
    study = load_study(f"sqlite:///{out / 'study.db'}")
    best = study.best_trial
    text = (out / "best.toml").read_text()
    assert f"trial {best.number}" in text
    run_cfg = load_config(out / "best.toml")
    assert run_cfg.tune is None
    assert run_cfg.model.layers[0].kwargs["units"] == best.params["model.layers[0].units"]
    assert run_cfg.fit.batch_size == best.params["fit.batch_size"]
    assert run_cfg.compile.learning_rate == pytest.approx(best.params["compile.learning_rate"])

    code, _, err = cli("train", out / "best.toml", "--out", tmp_path / "run")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # same config and seed: `mlnnkit train` gives the best trial's validation accuracy again
    assert metrics["validation"]["accuracy"] == pytest.approx(best.value, abs=1e-6)

    # and the saved best model scores that value on the validation rows
    ds = load_data(run_cfg)
    model = load_model(out / "best_model.keras", run_cfg)
    assert evaluate(model, ds.x_val, ds.y_val)["accuracy"] == pytest.approx(best.value, abs=1e-6)


def test_continue_the_study_and_errors_leave_it_as_it_was(study_dir, cli):
    cfg, out = study_dir
    storage = f"sqlite:///{out / 'study.db'}"
    before = {t.number: (t.params, t.value) for t in load_study(storage).get_trials()}
    csv_before = (out / "trials.csv").read_bytes()

    for args, words in [
        (["--metric", "val_loss"], "scores trials by val_accuracy (max)"),
        (["--metric", "val_precision"], "the model logs: val_accuracy, val_loss"),
        (["--metric", "accuracy"], "did you mean val_accuracy?"),
        (["--storage", "postgresql://u:pw@127.0.0.1:1/db"], "cannot reach storage"),
    ]:
        code, _, err = cli("tune", cfg, "--out", out, "--trials", 4, *args)
        assert code == 2, err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
        assert "pw" not in err  # the password is not shown
    assert {t.number: (t.params, t.value) for t in load_study(storage).get_trials()} == before
    assert (out / "trials.csv").read_bytes() == csv_before

    # the same command with --trials 4: one more trial, the first three kept as they were
    code, stdout, err = cli("tune", cfg, "--out", out, "--trials", 4)
    assert code == 0, err
    study = load_study(storage)
    assert states(study) == {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE", 3: "COMPLETE"}
    assert {n: v for n, v in ((t.number, (t.params, t.value)) for t in study.get_trials()) if n < 3} == before
    assert "4 complete" in stdout and "(1 run by this worker)" in stdout
    # again: nothing left to do, nothing repeated
    code, stdout, _ = cli("tune", cfg, "--out", out, "--trials", 4)
    assert code == 0 and "(0 run by this worker)" in stdout
    assert len(load_study(storage).get_trials()) == 4
    assert len(pd.read_csv(out / "trials.csv")) == 4


def test_pruning_callback_stops_a_trial_behind_the_others(tmp_path):
    """A real fit through train.run: the callback reports val_accuracy every epoch and
    raises TrialPruned when the median pruner says the trial is behind."""
    import optuna
    from optuna.distributions import FloatDistribution

    from mlnnkit.config import load_config
    from mlnnkit.data import load_data
    from mlnnkit.train import run
    from mlnnkit.tune import PruningCallback, SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = load_config(write_config(tmp_path, epochs=6))
    space = SearchSpace.from_config(cfg)
    ds = load_data(space.base)
    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=2),
    )
    # an earlier trial that was perfect at every epoch
    study.add_trial(optuna.trial.create_trial(
        params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, value=1.0,
        intermediate_values={e: 1.0 for e in range(1, 7)},
    ))
    trial = study.ask()
    cb = PruningCallback(trial, "val_accuracy")
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 2"):
        run(space.config({}), None, verbose=0, extra_callbacks=[cb], data=ds)
    assert cb.epochs_done == 2
    assert sorted(study.get_trials()[-1].intermediate_values) == [1, 2]  # reported per epoch


def test_same_config_same_study_random_sampler_hyperband(tmp_path, cli):
    """Trial seeds come from the config's seed: two studies from scratch sample the same
    values and reach the same scores (random sampler, Hyperband pruner)."""
    cfg = write_config(tmp_path, epochs=2, trials=2)
    runs = []
    for name in ("a", "b"):
        code, _, err = cli("tune", cfg, "--out", tmp_path / name, "--sampler", "random",
                           "--pruner", "hyperband")
        assert code == 0, err
        runs.append(pd.read_csv(tmp_path / name / "trials.csv"))
    a, b = runs
    assert (a["state"] == "COMPLETE").sum() == 2
    pd.testing.assert_frame_equal(a.drop(columns="duration_s"), b.drop(columns="duration_s"))


def test_importances_of_two_equal_trials_leak_no_optuna_warning(tmp_path):
    """Two trials of the same value: Optuna warns that the importances come out equal;
    mlnnkit's plot (and its summary) must not pass that warning on to the user."""
    import warnings

    import optuna

    from mlnnkit.report import plot_param_importances

    study = optuna.create_study()
    dist = {"model.layers[0].units": optuna.distributions.IntDistribution(4, 16, step=4)}
    for units in (4, 8):
        study.add_trial(optuna.trial.create_trial(
            params={"model.layers[0].units": units}, distributions=dist, value=0.5))  # fmt: skip
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        optuna.importance.get_param_importances(study)  # Optuna's own call: it warns
        assert any("quantiles" in str(w.message) for w in seen)
        seen.clear()
        plot_param_importances(study, tmp_path / "imp.png")
    assert (tmp_path / "imp.png").read_bytes()[:8] == PNG
    leaked = [str(w.message) for w in seen if "optuna" in (w.filename or "")]
    assert not leaked, leaked
