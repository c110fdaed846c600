"""Run config -> compiled ``keras.Model``.

Layers are given by Keras class name plus keyword arguments (``{type = "Dense", units =
128, activation = "relu"}``); mlnnkit's own layers (:mod:`mlnnkit.layers`) are found by
name too. Optimizers, losses, metrics and learning-rate schedules are Keras's own, by name
(looked up in :mod:`mlnnkit._keras_names`, which the config's validation uses too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import numpy as np

from mlnnkit._keras_names import make_layer, make_loss, make_metric, make_optimizer
from mlnnkit.errors import UserError

if TYPE_CHECKING:
    from mlnnkit.config import CompileConfig, RunConfig


def compile_model(model: keras.Model, cfg: CompileConfig) -> keras.Model:
    """Compile ``model`` with the config's optimizer, loss and metrics."""
    model.compile(
        optimizer=make_optimizer(cfg),
        loss=make_loss(cfg.loss),
        metrics=[make_metric(m) for m in cfg.metrics],
    )
    return model


def build_model(
    cfg: RunConfig,
    input_shape: tuple[int, ...] | None = None,
    x_train: np.ndarray | None = None,
    *,
    compile: bool = True,
) -> keras.Model:
    """Build (and compile) the config's layer stack as a ``keras.Sequential``.

    ``input_shape`` defaults to ``model.input_shape`` of the config, else to
    ``x_train.shape[1:]``. With ``model.normalize = true`` a Normalization layer adapted
    on ``x_train`` (the training split only) goes first.
    """
    shape = cfg.model.input_shape or input_shape
    if shape is None and x_train is not None:
        shape = x_train.shape[1:]
    if shape is None:
        raise UserError("model.input_shape: not given and no data to take it from")
    layers: list[keras.layers.Layer] = [keras.Input(shape=tuple(shape), name="inputs")]
    if cfg.model.normalize:
        norm = keras.layers.Normalization(axis=-1, name="normalization")
        if x_train is not None:
            norm.adapt(np.asarray(x_train, dtype="float32"))
        else:
            norm.build((None, *shape))
        layers.append(norm)
    for i, spec in enumerate(cfg.model.layers):
        try:
            layers.append(make_layer(spec))
        except UserError as e:
            raise UserError(f"model.layers[{i}]: {e}") from None
    model = keras.Sequential(layers, name=_model_name(cfg))
    if compile:
        compile_model(model, cfg.compile)
    return model


def _model_name(cfg: RunConfig) -> str:
    import re

    name = re.sub(r"[^A-Za-z0-9_]", "_", cfg.name or "model")
    return name if name[:1].isalpha() else f"m_{name}"


__all__ = ["build_model", "compile_model", "make_layer", "make_loss", "make_metric", "make_optimizer"]
