"""What every data source shares: the :class:`Dataset` a source loads, the base of its
config model (:class:`SourceConfig`), and aligned arrays for the fast fit path."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = ["ALIGNMENT", "Dataset", "SourceConfig", "aligned_empty"]


class SourceConfig(BaseModel):
    """Base of every data source's part of the run config (``[data]``): unknown keys are
    rejected. A source module defines one subclass with a ``source: Literal[...]`` field
    and names it ``CONFIG``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass
class Dataset:
    """Arrays of one run plus what is known about them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    feature_names: list[str] | None = None
    target_names: list[str] | None = None
    description: str = ""
    meta: dict = field(default_factory=dict)

    def summary(self) -> str:
        val = f", {len(self.x_val)} validation" if self.x_val is not None else ""
        return (
            f"{self.description or 'data'}: {len(self.x_train)} training{val}, "
            f"{len(self.x_test)} test rows; sample shape {tuple(self.x_train.shape[1:])}"
        )


ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype="float32") -> np.ndarray:
    """An uninitialised C-contiguous array whose data start on a 64-byte boundary.

    JAX on CPU uses such an array in place (``jax.device_put(a, may_alias=True)``) instead
    of copying it, so the fast fit path trains on a large image set without a second
    copy of it. Loaders write their float arrays into these.

    Example:
        >>> raw = np.full((6, 28, 28), 51, np.uint8)
        >>> x = aligned_empty(raw.shape)
        >>> _ = np.divide(raw, 255, out=x, dtype="float32")
        >>> x.ctypes.data % 64, round(float(x[0, 0, 0]), 6)
        (0, 0.2)
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)
