"""Which layers fine-tuning may change: freezing the first Dense layers or every layer up
to a named one (the package's scaling layers never train), a fresh copy for the
from-scratch comparison, and the trainable flags put back afterwards."""

from __future__ import annotations

import keras

from mlnnkit.errors import UserError

__all__ = ["freeze_layers", "is_fixed_layer", "scratch_copy"]


def _walk(model: keras.Model):
    """All layers of ``model`` in order, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk(layer)
        else:
            yield layer


def is_fixed_layer(layer: keras.layers.Layer) -> bool:
    """True for layers that transform data rather than learn: mlnnkit's scaling layers of
    an imported network (never trained), and layers without trainable weights."""
    own = type(layer).__module__.startswith("mlnnkit.")
    return own or not layer.trainable_weights


def freeze_layers(
    model: keras.Model, freeze: int = 0, freeze_until: str | None = None
) -> list[str]:
    """Set ``trainable = False`` on the first ``freeze`` Dense layers, or on every layer up
    to and including the one named ``freeze_until``; the package's scaling layers are
    always frozen. Returns the names of the frozen layers that have weights.

    Example:
        >>> freeze_layers(model, freeze=1)  # doctest: +SKIP
        ['dense']
    """
    if freeze and freeze_until:
        raise UserError("give either freeze=K or freeze_until=NAME, not both")
    if freeze < 0:
        raise UserError(f"freeze must be >= 0 (got {freeze})")
    layers = list(_walk(model))
    dense = [ly for ly in layers if isinstance(ly, keras.layers.Dense)]
    tabulated = [
        ly.name for ly in dense if getattr(ly.activation, "__name__", "") == "snap_sigmoid"
    ]
    if tabulated:
        raise UserError(
            f"layers {', '.join(tabulated)} use SNAP's tabulated sigmoid, whose gradient is zero: "
            "fine-tune the network imported with the exact sigmoid (the default of "
            "`mlnnkit import`) and export it again"
        )
    to_freeze: list[keras.layers.Layer] = []
    if freeze:
        if freeze >= len(dense):
            raise UserError(
                f"freeze {freeze} leaves nothing to fine-tune: the model has {len(dense)} "
                f"Dense layers; pass at most {len(dense) - 1}"
            )
        to_freeze = dense[:freeze]
    elif freeze_until:
        names = [ly.name for ly in layers]
        if freeze_until not in names:
            raise UserError(
                f"freeze_until: no layer named {freeze_until!r}; layers: {', '.join(names)}"
            )
        to_freeze = layers[: names.index(freeze_until) + 1]
    for ly in layers:
        if type(ly).__module__.startswith("mlnnkit."):
            ly.trainable = False
    for ly in to_freeze:
        ly.trainable = False
    if not model.trainable_weights:
        raise UserError("nothing left to fine-tune: every layer with weights is frozen")
    return [ly.name for ly in to_freeze if ly.weights]


def scratch_copy(model: keras.Model) -> keras.Model:
    """The same architecture freshly initialized: learned layers get new weights, fixed
    layers (input/output scaling, normalization statistics) keep the original's."""
    new = keras.models.clone_model(model)
    for a, b in zip(_walk(model), _walk(new)):
        if is_fixed_layer(a):
            b.set_weights(a.get_weights())
        b.trainable = a.trainable
    return new


def _trainable_flags(model: keras.Model) -> dict[int, bool]:
    return {id(ly): ly.trainable for ly in _walk(model)}


def _restore_trainable(model: keras.Model, flags: dict[int, bool]) -> None:
    """Give the layers their flags back: the saved model trains like the original when
    loaded again (freezing was this run's choice)."""
    for ly in _walk(model):
        ly.trainable = flags.get(id(ly), ly.trainable)
