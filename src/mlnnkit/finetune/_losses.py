"""The fine-tuning loss and penalty: :class:`StandardizedMSE` (each output's error in
units of its spread) and :class:`L2SP` (keep the weights near the pretrained ones)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from mlnnkit.errors import UserError

__all__ = ["L2SP", "StandardizedMSE", "attach_l2sp", "detach_l2sp", "l2sp_penalty", "target_scale"]


# --------------------------------------------------------------------------- L2-SP
@keras.saving.register_keras_serializable(package="mlnnkit")
class L2SP(keras.regularizers.Regularizer):
    """L2-SP penalty ``alpha * sum((w - w0)**2)``: keeps a weight near its start point.

    From Li, Grandvalet & Davoine (2018), "Explicit inductive bias for transfer learning
    with convolutional networks": instead of pulling fine-tuned weights towards zero (plain
    L2), pull them towards the pretrained weights ``w0``. The penalty is zero for the
    original network and grows as fine-tuning moves away from it.

    Args:
        alpha: strength of the penalty (``>= 0``).
        reference: the original weights ``w0`` (an array of the weight's shape).

    Example:
        >>> import numpy as np
        >>> w0 = np.ones((2, 3), "float32")
        >>> penalty = L2SP(1e-3, w0)
        >>> round(float(penalty(w0 + 1.0)), 6)   # 1e-3 * 6 weights * 1**2
        0.006
    """

    def __init__(self, alpha: float, reference):
        self.alpha = float(alpha)
        self.reference = np.array(reference)

    def __call__(self, w):
        ref = ops.convert_to_tensor(self.reference, dtype=w.dtype)
        return self.alpha * ops.sum(ops.square(w - ref))

    def get_config(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "reference": self.reference.tolist()}


def attach_l2sp(model: keras.Model, alpha: float) -> list:
    """Put an :class:`L2SP` penalty (reference: the current values) on every trainable
    weight of ``model``; returns the variables it was put on (for :func:`detach_l2sp`)."""
    if alpha < 0:
        raise UserError(f"alpha must be >= 0 (got {alpha})")
    touched = []
    if alpha == 0:
        return touched
    for v in model.trainable_weights:
        v.regularizer = L2SP(alpha, keras.ops.convert_to_numpy(v.value))
        touched.append(v)
    return touched


def detach_l2sp(variables: list) -> None:
    """Remove the penalties :func:`attach_l2sp` added (the saved model then needs nothing
    beyond Keras and ``import mlnnkit`` to load)."""
    for v in variables:
        v.regularizer = None


def l2sp_penalty(model: keras.Model) -> float:
    """The current total L2-SP penalty of ``model`` (0.0 when none is attached)."""
    total = 0.0
    for v in model.trainable_weights:
        if isinstance(v.regularizer, L2SP):
            total += float(keras.ops.convert_to_numpy(v.regularizer(v.value)))
    return total


# --------------------------------------------------------------------------- loss
@keras.saving.register_keras_serializable(package="mlnnkit")
class StandardizedMSE(keras.losses.Loss):
    """Mean squared error with each output's error divided by ``scale[j]``.

    With ``scale`` = the standard deviation of each target over the training rows, outputs
    in different physical units (or of very different sizes) weigh alike, and the loss (and
    so the L2-SP strength) does not depend on the data's units.

    Example:
        >>> import numpy as np
        >>> loss = StandardizedMSE(scale=[1.0, 10.0])
        >>> round(float(loss(np.zeros((1, 2)), np.array([[1.0, 10.0]]))), 6)  # both errors weigh 1
        1.0
    """

    def __init__(self, scale, name: str = "standardized_mse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale = np.asarray(scale, dtype="float64").reshape(-1)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        s = ops.convert_to_tensor(self.scale, dtype=y_pred.dtype)
        return ops.mean(ops.square((y_pred - y_true) / s), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale.tolist(), "name": self.name}


def target_scale(y: np.ndarray) -> np.ndarray:
    """Per-output standard deviation of ``y`` (1.0 where an output is constant)."""
    s = np.asarray(y, dtype="float64").reshape(len(y), -1).std(axis=0)
    return np.where(s > 0, s, 1.0)
