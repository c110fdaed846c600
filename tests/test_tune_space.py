"""The [tune] section: parsing, contradictions, paths, repeated layers, re-validation.

No training here: these run in well under a second each."""

from __future__ import annotations

import pytest

from mlnnkit.config import parse_config
from mlnnkit.errors import UserError
from mlnnkit.tune import SearchSpace, infer_direction

BASE = {
    "name": "t",
    "data": {"source": "csv", "path": "table.csv", "features": "a,b", "targets": "y"},
    "model": {"layers": [
        {"type": "Dense", "units": 8, "activation": "relu"},
        {"type": "Dropout", "rate": 0.1},
        {"type": "Dense", "units": 1},
    ]},
    "fit": {"validation_split": 0.25},
}


def cfg_with(space: dict, **tune):
    return parse_config({**BASE, "tune": {"space": space, **tune}}, where="c.toml")


def error_of(space: dict, **tune) -> str:
    with pytest.raises(UserError) as e:
        cfg_with(space, **tune)
    return str(e.value)


@pytest.mark.parametrize(
    "space, words",
    [
        ({}, ["tune.space", "empty search space"]),
        ({"fit.batch_size": {"int": [64, 32]}}, ['"fit.batch_size"', "low 64 is greater than high 32"]),
        ({"compile.learning_rate": {"float": [0.0, 0.1], "log": True}}, ["log = true", "low must be > 0"]),
        ({"compile.learning_rate": {"float": [1e-4, 0.1], "log": True, "step": 0.01}}, ["step and log"]),
        ({"fit.batch_size": {"int": [8, 64], "float": [1, 2]}}, ["exactly one of", "got int and float"]),
        ({"fit.batch_size": {"int": [8, 64], "stpe": 8}}, ['"fit.batch_size".stpe', "unknown key"]),
        ({"fit.batch_size": {"int": [8, 64.5]}}, ["bounds must be integers"]),
        ({"fit.batch_size": {"int": [8]}}, ["two numbers [low, high]"]),
        ({"fit.batch_size": {"int": [8, 60], "step": 8}}, ["not a multiple of step"]),
        ({"fit.batch_size": {"choices": []}}, ["choices = [] is empty"]),
        ({"fit.batch_size": {"choices": [16, 16]}}, ["repeat a value"]),
        ({"fit.batch_size": {"choices": [16, 32], "log": True}}, ["not to choices"]),
        ({"compile.optimizer": {"choices": [{"name": "adam"}]}}, ["not a number, string or boolean"]),
        ({"fit..batch_size": {"choices": [16]}}, ["is not a key"]),
        ({"model.layers[2:1].repeat": {"int": [1, 2]}}, ["empty slice"]),
        ({"model.layers[0:2].units": {"int": [1, 2]}}, ["only allowed right before .repeat"]),
        ({"fit.repeat": {"int": [1, 2]}}, ["repeat works on model.layers only"]),
        ({"model.layers[0].repeat": {"float": [1, 2]}}, ["repeat takes int"]),
        ({"model.layers[0:2].repeat": {"int": [1, 2]}, "model.layers[1].repeat": {"int": [1, 2]}},
         ["overlaps"]),
        ({"data.path": {"choices": ["a.csv"]}}, ["fixed for a study"]),
        ({"fit.validation_split": {"float": [0.1, 0.3]}}, ["fixed for a study"]),
        ({"seed": {"int": [1, 3]}}, ["fixed for a study"]),
    ],
)
def test_contradictory_or_empty_space_is_rejected_naming_the_key(space, words):
    msg = error_of(space)
    assert msg.startswith("c.toml: tune.space")
    for w in words:
        assert w in msg, msg


def test_tune_settings_are_validated():
    assert "tune.trials" in error_of({"fit.batch_size": {"choices": [16]}}, trials=0)
    assert "tune.pruner" in error_of({"fit.batch_size": {"choices": [16]}}, pruner="sometimes")
    assert "tune.direction" in error_of({"fit.batch_size": {"choices": [16]}}, direction="up")


@pytest.mark.parametrize(
    "space, words",
    [
        ({"fit.batchsize": {"int": [8, 16]}}, ['"fit.batchsize"', "fit.batchsize: unknown key"]),
        ({"model.layers[7].units": {"int": [8, 16]}}, ["model.layers has 3 entries", "no [7]"]),
        ({"callbacks.early_stopping.patience": {"int": [2, 5]}},
         ["has no callbacks.early_stopping", "add it to the config"]),
        ({"model.layers[0].unit": {"int": [8, 16]}}, ['"model.layers[0].unit" = 8', "unit"]),
        ({"fit.batch_size": {"int": [0, 16]}}, ['"fit.batch_size" = 0', "greater than or equal to 1"]),
        ({"compile.optimizer": {"choices": ["adam", "adamm"]}}, ["'adamm'", "unknown optimizer"]),
        ({"model.layers[0:5].repeat": {"int": [1, 2]}}, ["model.layers has 3 layers"]),
    ],
)
def test_unknown_path_or_bad_value_fails_before_any_trial(space, words):
    space_ = SearchSpace.from_config(cfg_with(space), where="c.toml")
    with pytest.raises(UserError) as e:
        space_.check()
    msg = str(e.value)
    assert msg.startswith("c.toml: tune.space")
    for w in words:
        assert w in msg, msg


def test_values_fill_the_config_and_repeat_expands_blocks():
    space = SearchSpace.from_config(cfg_with({
        "model.layers[0].units": {"int": [4, 64], "step": 4},
        "model.layers[1].rate": {"float": [0.0, 0.5]},
        "model.layers[0:2].repeat": {"int": [0, 3]},
        "compile.learning_rate": {"float": [1e-4, 1e-2], "log": True},
        "compile.optimizer": {"choices": ["adam", "rmsprop"]},
        "fit.batch_size": {"choices": [16, 64]},
    }))
    space.check()
    cfg = space.config({
        "model.layers[0].units": 48, "model.layers[1].rate": 0.3,
        "model.layers[0:2].repeat": 3, "compile.learning_rate": 0.003,
        "compile.optimizer": "rmsprop", "fit.batch_size": 64,
    })
    types = [(l.type, l.kwargs.get("units"), l.kwargs.get("rate")) for l in cfg.model.layers]
    assert types == [("Dense", 48, None), ("Dropout", None, 0.3)] * 3 + [("Dense", 1, None)]
    assert cfg.compile.learning_rate == 0.003
    assert cfg.compile.optimizer == "rmsprop"
    assert cfg.fit.batch_size == 64
    assert cfg.tune is None  # a trial's config is a plain run config
    # zero copies of the block: only the output layer is left
    assert [l.type for l in space.config({"model.layers[0:2].repeat": 0}).model.layers] == ["Dense"]
    # the base config itself is untouched
    assert [l.kwargs.get("units") for l in space.base.model.layers] == [8, None, 1]


def test_each_sampled_config_is_revalidated_by_the_schema():
    space = SearchSpace.from_config(cfg_with({"fit.batch_size": {"choices": [16]}}))
    with pytest.raises(UserError, match="fit.batch_size"):
        space.config({"fit.batch_size": -3})
    with pytest.raises(UserError, match="unknown optimizer"):
        space.config({"compile.optimizer": "sgdd"})


def test_optuna_distributions_follow_the_dimensions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    d = SearchSpace.from_config(cfg_with({
        "model.layers[0].units": {"int": [32, 256], "step": 32},
        "compile.learning_rate": {"float": [1e-4, 1e-2], "log": True},
        "fit.batch_size": {"choices": [32, 64, 128]},
    })).distributions()
    assert d["model.layers[0].units"] == IntDistribution(32, 256, step=32)
    assert d["compile.learning_rate"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["fit.batch_size"] == CategoricalDistribution([32, 64, 128])


def test_direction_from_metric_name():
    assert infer_direction("val_loss") == "min"
    assert infer_direction("val_mae") == "min"
    assert infer_direction("val_accuracy") == "max"
    assert infer_direction("val_auc") == "max"
    with pytest.raises(UserError, match="--direction"):
        infer_direction("val_widget")


def test_cli_rejects_a_bad_space_with_one_line_and_writes_nothing(cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[data]\nsource = "csv"\npath = "t.csv"\nfeatures = "a"\ntargets = "y"\n'
        '[[model.layers]]\ntype = "Dense"\nunits = 1\n'
        '[tune.space]\n"compile.learning_rate" = {float = [1e-2, 1e-4], log = true}\n'
    )
    out = tmp_path / "out"
    code, _, err = cli("tune", cfg, "--out", out)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert 'tune.space."compile.learning_rate"' in err and "greater than high" in err
    assert not out.exists()
    # a config without [tune]
    cfg.write_text(
        '[data]\nsource = "csv"\npath = "t.csv"\nfeatures = "a"\ntargets = "y"\n'
        '[[model.layers]]\ntype = "Dense"\nunits = 1\n'
    )
    code, _, err = cli("tune", cfg, "--out", out)
    assert code == 2 and "no [tune] section" in err
    assert not out.exists()


def test_baseline_is_the_config_as_written_when_it_lies_in_the_space():
    dims = {
        "model.layers[0].units": {"int": [4, 64], "step": 4},
        "model.layers[1].rate": {"float": [0.0, 0.5]},
        "model.layers[0:2].repeat": {"int": [1, 3]},
        "fit.batch_size": {"choices": [16, 32]},
        "compile.optimizer": {"choices": ["adam", "rmsprop"]},
    }
    space = SearchSpace.from_config(cfg_with(dims))
    assert space.baseline() == {
        "model.layers[0].units": 8, "model.layers[1].rate": 0.1,
        "model.layers[0:2].repeat": 1, "fit.batch_size": 32, "compile.optimizer": "adam",
    }
    # a value the config does not set (learning_rate), or one outside its range: no baseline
    assert SearchSpace.from_config(cfg_with(
        {**dims, "compile.learning_rate": {"float": [1e-4, 1e-2], "log": True}})).baseline() is None
    assert SearchSpace.from_config(cfg_with(
        {**dims, "model.layers[0].units": {"int": [16, 64], "step": 16}})).baseline() is None
    assert SearchSpace.from_config(cfg_with(
        {**dims, "model.layers[0].units": {"int": [6, 66], "step": 4}})).baseline() is None  # 8 off the grid
