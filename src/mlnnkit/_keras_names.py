"""Keras objects by name: layers (Keras's and mlnnkit's own), optimizers, learning-rate
schedules, losses and metrics, with errors that name the bad key and suggest close names.
Used by the config's validation (:func:`mlnnkit.config.check_keras_names`) and by
:mod:`mlnnkit.build`; it knows neither (specs are duck-typed: ``.type``/``.kwargs``,
``.name``/``.kwargs``).
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

import keras

from mlnnkit.errors import UserError

if TYPE_CHECKING:  # annotations only: the config's specs
    from mlnnkit.config import CompileConfig, LayerSpec, NamedObject


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _layer_classes() -> dict[str, type]:
    out = {
        n: getattr(keras.layers, n)
        for n in dir(keras.layers)
        if isinstance(getattr(keras.layers, n), type)
        and issubclass(getattr(keras.layers, n), keras.layers.Layer)
    }
    try:  # the package's own serializable layers (scaling layers of imported networks)
        from mlnnkit import layers as own

        for n in getattr(own, "__all__", []):
            obj = getattr(own, n)
            if isinstance(obj, type) and issubclass(obj, keras.layers.Layer):
                out[n] = obj
    except ImportError:
        pass
    return out


def make_layer(spec: LayerSpec) -> keras.layers.Layer:
    """Instantiate one layer from its spec; errors name the bad class or argument."""
    classes = _layer_classes()
    cls = classes.get(spec.type)
    if cls is None:
        raise UserError(
            f"type: unknown layer {spec.type!r}{_suggest(spec.type, classes)}; "
            "use a keras.layers class name such as Dense, Dropout, Flatten"
        )
    try:
        return cls(**spec.kwargs)
    except (TypeError, ValueError) as e:
        msg = " ".join(str(e).split())
        bad = [k for k in spec.kwargs if f"'{k}'" in msg or k in msg]
        key = bad[0] if bad else "type"
        raise UserError(f"{key}: {spec.type} rejected its arguments {spec.kwargs}: {msg}") from None


def _schedule(lr: float | NamedObject | None):
    if lr is None or isinstance(lr, (int, float)):
        return lr
    try:
        cls = getattr(keras.optimizers.schedules, lr.name)
    except AttributeError:
        names = [n for n in dir(keras.optimizers.schedules) if n[0].isupper()]
        raise UserError(
            f"learning_rate.name: unknown schedule {lr.name!r}{_suggest(lr.name, names)}"
        ) from None
    try:
        return cls(**lr.kwargs)
    except (TypeError, ValueError) as e:
        raise UserError(f"learning_rate: {lr.name} rejected {lr.kwargs}: {e}") from None


def make_optimizer(cfg: CompileConfig) -> keras.optimizers.Optimizer:
    name = cfg.optimizer if isinstance(cfg.optimizer, str) else cfg.optimizer.name
    kwargs: dict[str, Any] = {} if isinstance(cfg.optimizer, str) else cfg.optimizer.kwargs
    lr = _schedule(cfg.learning_rate)
    if lr is not None:
        kwargs["learning_rate"] = lr
    try:
        opt = keras.optimizers.get({"class_name": name, "config": kwargs})
    except (ValueError, TypeError) as e:
        names = [n for n in dir(keras.optimizers) if n[0].isupper() and n not in ("Optimizer",)]
        if "Could not interpret" in str(e) or "Could not locate" in str(e):
            raise UserError(
                f"optimizer: unknown optimizer {name!r}{_suggest(name, names)}"
            ) from None
        raise UserError(f"optimizer: {name} rejected {kwargs}: {e}") from None
    return opt


def _named(obj: str | NamedObject) -> tuple[str, dict]:
    return (obj, {}) if isinstance(obj, str) else (obj.name, obj.kwargs)


def make_loss(loss: str | NamedObject):
    name, kwargs = _named(loss)
    try:
        if kwargs:
            return keras.losses.get({"class_name": name, "config": kwargs})
        return keras.losses.get(name)
    except (ValueError, TypeError) as e:
        names = [n for n in dir(keras.losses) if not n.startswith("_")]
        raise UserError(f"unknown or bad loss {name!r}{_suggest(name, names)}: {e}") from None


def make_metric(name: str):
    if name in ("accuracy", "acc", "mae", "mse", "rmse"):
        return name if name != "rmse" else keras.metrics.RootMeanSquaredError(name="rmse")
    try:
        keras.metrics.get(name)
    except (ValueError, TypeError):
        names = [n for n in dir(keras.metrics) if not n.startswith("_")]
        raise UserError(f"unknown metric {name!r}{_suggest(name, names)}") from None
    return name
