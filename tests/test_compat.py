"""Every private Keras/JAX name mlnnkit uses still exists in the installed versions, and
the fast path says why it falls back outside the tested versions."""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import keras
import numpy as np

from mlnnkit import _compat, fastfit


def _tiny_compiled():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    return model


def test_every_private_name_exists():
    model = _tiny_compiled()
    assert _compat.missing(model) == []
    from keras.src.backend.jax.trainer import JAXTrainer

    assert "_initial_epoch" in inspect.getsource(JAXTrainer.fit)


def test_installed_versions_are_in_the_tested_range_and_pyproject_pins_it():
    assert _compat.version_reason() is None
    deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    pins = " ".join(deps["project"]["dependencies"])
    lo, hi = _compat.KERAS_TESTED
    assert f"keras>={lo},<{hi}" in pins
    lo, hi = _compat.JAX_TESTED
    assert f"jax[cpu]>={lo},<{hi}" in pins


def test_private_helpers_do_what_keras_does():
    model = _tiny_compiled()
    x, y = np.zeros((4, 3), "float32"), np.zeros((4, 2), "float32")
    _compat.symbolic_build(model, x[:1], y[:1])
    loss, _metrics = _compat.compiled_loss_and_metrics(model)
    assert loss is not None and loss.built
    names = [ly.name for ly in _compat.flatten_layers(model, include_self=False)]
    assert names[-1] == model.layers[-1].name and len(names) == 2  # the input layer and the Dense
    assert _compat.is_keras_class(model.optimizer)
    assert _compat.initial_epoch(model) is None
    assert isinstance(_compat.bit64_to_bit32_table(), dict)


def test_outside_the_tested_range_the_fast_path_says_why(monkeypatch):
    _compat.version_reason.cache_clear()
    monkeypatch.setattr(_compat, "KERAS_TESTED", ("3.8", "3.9"))
    try:
        why = fastfit.unsupported_reason(_tiny_compiled())
        assert why is not None and f"keras {keras.__version__} is outside" in why
        assert fastfit.select(_tiny_compiled()) is None
    finally:
        _compat.version_reason.cache_clear()
