"""Retrievals as their processors run them: the transforms around a network (recipes),
chains of networks and per-pixel quality flags.

Recipes (#11):

- :func:`resolve`: the :class:`Recipe` of a legacy network (OC-SMART family from the
  file name, C2RCC ``log_X`` names, or ``--transforms`` given by the user);
- :func:`ocsmart_family`, :data:`OCSMART_FAMILIES`, :func:`known_families`;
- :func:`parse_transforms`, :func:`parse_names`: the option grammar;
- :func:`physical_ranges`: a network's ranges in physical units;
- :func:`is_physical`, :func:`transform_layers`, :func:`network_model`,
  :func:`inputs_to_network`, :func:`targets_to_network`: a physical model seen from the
  network's side (imported on first use: they need Keras).

Chains and flags (#12; imported on first use, so this package does not import Keras):

- :func:`chain`: several physical-unit models wired by variable name into one
  ``keras.Model`` (with an optional autoassociative scope test, ``scope_error``);
  :func:`chain_info`, :func:`is_chain`, :func:`refuse_chain`, :func:`describe_chain`;
- :func:`flags_model`: a model's outputs and its ``uint8`` quality flags in one compiled
  program (``mlnnkit.predict_array(model, x, flags=True)`` uses it); :data:`FLAG_BITS`,
  :func:`flag_attrs` (CF attributes), :func:`flag_counts`, :func:`format_flag_counts`.

Example:
    >>> from mlnnkit.retrieval import ocsmart_family, FLAG_BITS
    >>> ocsmart_family("OLCI_aphNN.h5")
    'aphNN'
    >>> [name for name, mask, _ in FLAG_BITS][:2]
    ['input_out_of_range', 'output_out_of_range']
"""

from __future__ import annotations

import importlib

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

_LAZY = {
    "chain": "_chain",
    "chain_info": "_chain",
    "is_chain": "_chain",
    "refuse_chain": "_chain",
    "describe_chain": "_chain",
    "DEFAULT_SCOPE_THRESHOLDS": "_chain",
    "flags_model": "_flags",
    "flag_attrs": "_flags",
    "flag_counts": "_flags",
    "format_flag_counts": "_flags",
    "DEFAULT_LIMIT_MARGIN": "_flags",
    "FLAG_NAME": "_flags",
    "FLAG_BITS": "_layers",
    "SCOPE_METRICS": "_layers",
}
_PHYSICAL = (
    "apply_columns",
    "inputs_to_network",
    "is_physical",
    "network_model",
    "targets_to_network",
    "transform_layers",
    "untransformable_rows",
)
_LAZY.update({name: "_physical" for name in _PHYSICAL})

__all__ = [
    "DEFAULT_LIMIT_MARGIN",
    "DEFAULT_SCOPE_THRESHOLDS",
    "FLAG_BITS",
    "FLAG_NAME",
    "OCSMART_FAMILIES",
    "SCOPE_METRICS",
    "Family",
    "Recipe",
    "apply_columns",
    "chain",
    "chain_info",
    "describe_chain",
    "flag_attrs",
    "flag_counts",
    "flags_model",
    "format_flag_counts",
    "inputs_to_network",
    "is_chain",
    "is_physical",
    "known_families",
    "network_model",
    "ocsmart_family",
    "parse_names",
    "parse_transforms",
    "physical_ranges",
    "refuse_chain",
    "resolve",
    "targets_to_network",
    "transform_layers",
    "untransformable_rows",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"mlnnkit.retrieval.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mlnnkit.retrieval' has no attribute {name!r}")
