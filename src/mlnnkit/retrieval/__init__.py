"""Retrievals the way processors run them: chains of networks and per-pixel quality flags.

- :func:`chain`: several physical-unit models wired by variable name into one
  ``keras.Model`` (with an optional autoassociative scope test, ``scope_error``);
  :func:`chain_info`, :func:`is_chain`, :func:`refuse_chain` read a chain back.
- :func:`flags_model`: a model's outputs and its ``uint8`` quality flags in one compiled
  program (``mlnnkit.predict_array(model, x, flags=True)`` uses it); :data:`FLAG_BITS`,
  :func:`flag_attrs` (CF attributes), :func:`flag_counts`.

Names are imported lazily, so importing this package does not import Keras.

Example:
    >>> from mlnnkit.retrieval import FLAG_BITS
    >>> [name for name, mask, _ in FLAG_BITS][:2]
    ['input_out_of_range', 'output_out_of_range']
"""

from __future__ import annotations

import importlib

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

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"mlnnkit.retrieval.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mlnnkit.retrieval' has no attribute {name!r}")
