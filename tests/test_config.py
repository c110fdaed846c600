"""The run-config schema: defaults, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlnnkit.config import load_config, parse_config
from mlnnkit.errors import UserError
from tests.helpers import regression_config, write_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["seed_mnist", "seed_fashion_mnist", "auto_mpg"])
def test_examples_validate(name):
    cfg = load_config(EXAMPLES / f"{name}.toml")
    assert cfg.name == name
    assert cfg.fit.epochs >= 5


def test_seed_example_is_the_seed_network():
    cfg = load_config(EXAMPLES / "seed_mnist.toml")
    layers = [(s.type, s.kwargs) for s in cfg.model.layers]
    assert layers == [
        ("Flatten", {}),
        ("Dense", {"units": 128, "activation": "relu"}),
        ("Dropout", {"rate": 0.2}),
        ("Dense", {"units": 10, "activation": "softmax"}),
    ]
    assert cfg.compile.optimizer == "adam"
    assert cfg.compile.loss == "sparse_categorical_crossentropy"
    assert cfg.compile.metrics == ["accuracy"]
    assert (cfg.fit.epochs, cfg.fit.batch_size) == (5, 32)


def test_roundtrip_through_toml(tmp_path):
    cfg = parse_config(regression_config(tmp_path / "d.csv"))
    again = parse_config(__import__("tomllib").loads(cfg.to_toml()))
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    "over, key",
    [
        ({"fit.epochs": 0}, "fit.epochs"),
        ({"fit.epoch": 3}, "fit.epoch: unknown key"),
        ({"colour": "red"}, "colour: unknown key"),
        ({"data.source": "mnst"}, "data"),
        ({"fit.validation_split": 1.5}, "fit.validation_split"),
        ({"compile.learning_rate": -1.0}, "compile.learning_rate"),
        ({"callbacks.early_stopping": {"patience": -1}}, "callbacks.early_stopping.patience"),
    ],
)
def test_bad_values_name_the_key(tmp_path, over, key):
    with pytest.raises(UserError) as e:
        parse_config(regression_config(tmp_path / "d.csv", **over), where="cfg.toml")
    assert key in str(e.value)
    assert str(e.value).startswith("cfg.toml: ")


def test_unknown_layer_suggests(tmp_path):
    cfg = regression_config(tmp_path / "d.csv")
    cfg["model"]["layers"][0]["type"] = "Dens"
    with pytest.raises(UserError, match=r"model.layers\[0\].*unknown layer 'Dens'.*Dense"):
        parse_config(cfg)


def test_bad_layer_argument_names_it(tmp_path):
    cfg = regression_config(tmp_path / "d.csv")
    cfg["model"]["layers"][0]["unitz"] = 3
    with pytest.raises(UserError, match=r"model.layers\[0\].*unitz"):
        parse_config(cfg)


def test_unknown_optimizer_and_loss(tmp_path):
    with pytest.raises(UserError, match="compile.optimizer: unknown optimizer 'adamm'"):
        parse_config(regression_config(tmp_path / "d.csv", **{"compile.optimizer": "adamm"}))
    with pytest.raises(UserError, match="compile.loss"):
        parse_config(regression_config(tmp_path / "d.csv", **{"compile.loss": "msee"}))
    with pytest.raises(UserError, match=r"compile.metrics\[0\]"):
        parse_config(regression_config(tmp_path / "d.csv", **{"compile.metrics": ["acuracy"]}))


def test_schedule_by_name(tmp_path):
    sched = {"name": "ExponentialDecay", "initial_learning_rate": 0.01, "decay_steps": 10, "decay_rate": 0.9}
    cfg = parse_config(regression_config(tmp_path / "d.csv", **{"compile.learning_rate": sched}))
    from mlnnkit.build import make_optimizer

    opt = make_optimizer(cfg.compile)
    import keras

    assert isinstance(opt.learning_rate, keras.optimizers.schedules.ExponentialDecay) or hasattr(
        opt, "_learning_rate"
    )
    with pytest.raises(UserError, match="compile.learning_rate.name: unknown schedule"):
        parse_config(regression_config(tmp_path / "d.csv", **{"compile.learning_rate": {"name": "Nope"}}))


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[fit\nepochs = 3\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(bad)


def test_relative_paths_resolve_from_config_folder(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    cfg = regression_config(Path("data.csv"))
    p = write_config(sub / "c.toml", cfg)
    loaded = load_config(p)
    assert loaded.base_dir == sub
