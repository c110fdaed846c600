"""Retrievals as their processors run them: the transforms around a network (recipes),
and (#12) chains and flags.

- :func:`resolve`: the :class:`Recipe` of a legacy network (OC-SMART family from the
  file name, C2RCC ``log_X`` names, or ``--transforms`` given by the user);
- :func:`ocsmart_family`, :data:`OCSMART_FAMILIES`, :func:`known_families`;
- :func:`parse_transforms`, :func:`parse_names`: the option grammar;
- :func:`physical_ranges`: a network's ranges in physical units;
- :func:`is_physical`, :func:`transform_layers`, :func:`network_model`,
  :func:`inputs_to_network`, :func:`targets_to_network`: a physical model seen from the
  network's side (imported on first use: they need Keras).

Example:
    >>> from mlnnkit.retrieval import ocsmart_family
    >>> ocsmart_family("OLCI_aphNN.h5")
    'aphNN'
"""

from __future__ import annotations

from mlnnkit.retrieval._recipes import (
    OCSMART_FAMILIES,
    Family,
    Recipe,
    known_families,
    ocsmart_family,
    parse_names,
    parse_transforms,
    physical_ranges,
    resolve,
)

_PHYSICAL = (
    "apply_columns",
    "inputs_to_network",
    "is_physical",
    "network_model",
    "targets_to_network",
    "transform_layers",
    "untransformable_rows",
)


def __getattr__(name: str):
    # Keras is imported only when a model-side helper is asked for.
    if name in _PHYSICAL:
        from mlnnkit.retrieval import _physical

        return getattr(_physical, name)
    raise AttributeError(f"module 'mlnnkit.retrieval' has no attribute {name!r}")


__all__ = [
    *_PHYSICAL,
    "OCSMART_FAMILIES",
    "Family",
    "Recipe",
    "known_families",
    "ocsmart_family",
    "parse_names",
    "parse_transforms",
    "physical_ranges",
    "resolve",
]
