"""Retrievals as their processors run them: the transforms around a network (recipes),
and (#12) chains and flags.

- :func:`resolve`: the :class:`Recipe` of a legacy network (OC-SMART family from the
  file name, C2RCC ``log_X`` names, or ``--transforms`` given by the user);
- :func:`ocsmart_family`, :data:`OCSMART_FAMILIES`, :func:`known_families`;
- :func:`parse_transforms`, :func:`parse_names`: the option grammar;
- :func:`physical_ranges`: a network's ranges in physical units.

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

__all__ = [
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
