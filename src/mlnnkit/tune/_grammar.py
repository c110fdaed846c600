"""The tuning search-space grammar of a run config's ``[tune]`` table: dotted config paths
(:func:`parse_path`), search dimensions (:class:`Dimension`) and the ``[tune]`` settings
(:class:`TuneConfig`). Pure pydantic: :mod:`mlnnkit.config` imports it without importing
Optuna or Keras.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_STRICT = ConfigDict(extra="forbid", validate_assignment=True)

__all__ = ["Dimension", "TuneConfig", "parse_path"]


# A dotted path into the run config: `fit.batch_size`, `model.layers[1].units`,
# `model.layers[1:3].repeat` (a slice only in front of `.repeat`).
_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+(?::\d+)?\])?)")


def parse_path(path: str) -> list[str | int | tuple[int, int]]:
    """Split a dotted config path into keys, list indices and ``(start, stop)`` slices.

    Example:
        >>> parse_path("model.layers[1].units")
        ['model', 'layers', 1, 'units']
        >>> parse_path("model.layers[1:3].repeat")
        ['model', 'layers', (1, 3), 'repeat']
    """
    parts: list[str | int | tuple[int, int]] = []
    for piece in path.split("."):
        m = _PATH_PART.fullmatch(piece)
        if m is None:
            raise ValueError(
                f"{piece!r} is not a key; write paths like \"fit.batch_size\" or "
                "\"model.layers[1].units\""
            )
        parts.append(m.group(1))
        if m.group(2):
            idx = m.group(2)[1:-1]
            if ":" in idx:
                a, b = (int(v) for v in idx.split(":"))
                if b <= a:
                    raise ValueError(f"[{idx}] is an empty slice; write [start:stop] with stop > start")
                parts.append((a, b))
            else:
                parts.append(int(idx))
    slices = [i for i, p in enumerate(parts) if isinstance(p, tuple)]
    if slices and (slices != [len(parts) - 2] or parts[-1] != "repeat"):
        raise ValueError("a slice [a:b] is only allowed right before .repeat")
    if parts[-1] == "repeat" and parts[:2] != ["model", "layers"]:
        raise ValueError("repeat works on model.layers only, e.g. \"model.layers[1:3].repeat\"")
    if parts[-1] == "repeat" and not isinstance(parts[-2], (int, tuple)):
        raise ValueError("repeat needs the layers to repeat, e.g. \"model.layers[1:3].repeat\"")
    if parts[0] in ("tune", "data", "seed", "name") or parts[:2] in (
        ["fit", "validation_split"], ["fit", "validation"]
    ):
        raise ValueError(
            "the data, their split and the seed are fixed for a study (loaded once, the same "
            "for every trial); tune the model, compile, fit or callbacks settings"
        )
    return parts


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Dimension(BaseModel):
    """One search dimension: an integer range, a float range, or a list of choices.

    Written as an inline table in ``[tune.space]``, keyed by the config path it sets::

        "model.layers[1].units"   = {int = [32, 256], step = 32}
        "compile.learning_rate"   = {float = [1e-4, 1e-2], log = true}
        "model.layers[2].rate"    = {float = [0.0, 0.5]}
        "fit.batch_size"          = {choices = [32, 64, 128]}
        "model.layers[1:3].repeat" = {int = [1, 3]}   # the block of layers 1-2, 1 to 3 times

    ``int``/``float`` bounds are inclusive. ``log = true`` samples on a log scale (needs
    low > 0); ``step`` samples a grid low, low+step, ..., high (not with log).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    int_: list[Any] | None = Field(None, alias="int")
    float_: list[Any] | None = Field(None, alias="float")
    choices: list[Any] | None = None
    step: float | int | None = None
    log: bool = False

    @property
    def kind(self) -> str:
        return "int" if self.int_ is not None else "float" if self.float_ is not None else "choices"

    @property
    def bounds(self) -> tuple[Any, Any]:
        rng = self.int_ if self.int_ is not None else self.float_
        return rng[0], rng[1]

    def contains(self, value: Any) -> bool:
        """True when ``value`` is one this dimension can sample."""
        if self.kind == "choices":
            return any(type(c) is type(value) and c == value for c in self.choices)
        if not _is_number(value) or (self.kind == "int" and not isinstance(value, int)):
            return False
        low, high = self.bounds
        if not low <= value <= high:
            return False
        if self.step is None:
            return True
        n = (value - low) / self.step
        return abs(n - round(n)) < 1e-9

    @model_validator(mode="after")
    def _check(self):
        given = [k for k, v in (("int", self.int_), ("float", self.float_), ("choices", self.choices)) if v is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of int = [low, high], float = [low, high] or choices = [...]"
                + (f" (got {' and '.join(given)})" if given else "")
            )
        kind = given[0]
        if kind == "choices":
            if not self.choices:
                raise ValueError("choices = [] is empty; list at least one value")
            if self.step is not None or self.log:
                raise ValueError("step and log apply to int and float ranges, not to choices")
            for c in self.choices:
                if not isinstance(c, (str, int, float, bool)):
                    # pydantic reports a ValueError (not a TypeError) as a validation error
                    raise ValueError(f"choice {c!r} is not a number, string or boolean")  # noqa: TRY004
            if len({(type(c), c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"choices {self.choices} repeat a value")
            return self
        rng = self.int_ if kind == "int" else self.float_
        if len(rng) != 2 or not all(_is_number(v) for v in rng):
            raise ValueError(f"{kind} = {rng}: give two numbers [low, high]")
        low, high = rng
        if kind == "int" and not all(isinstance(v, int) for v in rng):
            raise ValueError(f"int = {rng}: bounds must be integers (use float = [...] for reals)")
        if low > high:
            raise ValueError(f"{kind} = {rng}: low {low} is greater than high {high}")
        if self.log and low <= 0:
            raise ValueError(f"{kind} = {rng} with log = true: low must be > 0")
        if self.step is not None:
            if self.log:
                raise ValueError("step and log = true cannot be combined; drop one")
            if self.step <= 0:
                raise ValueError(f"step = {self.step} must be > 0")
            if kind == "int" and not isinstance(self.step, int):
                raise ValueError(f"step = {self.step} must be an integer for an int range")
            n = (high - low) / self.step
            if abs(n - round(n)) > 1e-9:
                raise ValueError(
                    f"{kind} = {rng}, step = {self.step}: high - low is not a multiple of step"
                )
        return self


class TuneConfig(BaseModel):
    """``[tune]``: the search space and how a study (``mlnnkit tune``) scores trials.

    Example::

        [tune]
        metric = "val_accuracy"   # default val_loss
        direction = "max"         # default: from the metric's name
        trials = 20               # complete trials the study ends with (--trials)
        [tune.space]
        "compile.learning_rate" = {float = [1e-4, 1e-2], log = true}
    """

    model_config = _STRICT
    metric: str | None = Field(
        None, description="Validation metric that scores a trial (default val_loss)."
    )
    direction: Literal["min", "max"] | None = Field(
        None, description="Minimise or maximise the metric (default: from its name)."
    )
    trials: int = Field(20, ge=1, description="The study ends with this many COMPLETE trials.")
    timeout: float | None = Field(None, gt=0, description="Start no new trial after S seconds.")
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    count_pruned: bool = Field(
        False, description="Count pruned trials toward `trials` too (default: only complete)."
    )
    baseline: bool = Field(
        True,
        description="Run the config's own values as the study's first trial (when every "
        "dimension has a value in the config that lies in its range), so trials.csv shows "
        "what tuning gained over it.",
    )
    space: dict[str, Dimension] = Field(default_factory=dict)

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, Dimension]):
        if not v:
            raise ValueError(
                'empty search space: add dimensions under [tune.space], e.g. '
                '"compile.learning_rate" = {float = [1e-4, 1e-2], log = true}'
            )
        blocks = []
        for key, dim in v.items():
            try:
                parts = parse_path(key)
            except ValueError as e:
                raise ValueError(f'"{key}": {e}') from None
            if parts[-1] == "repeat":
                if dim.kind != "int" or dim.bounds[0] < 0:
                    raise ValueError(f'"{key}": repeat takes int = [low, high] with low >= 0')
                sl = parts[-2] if isinstance(parts[-2], tuple) else (parts[-2], parts[-2] + 1)
                for other_key, other in blocks:
                    if sl[0] < other[1] and other[0] < sl[1]:
                        raise ValueError(f'"{key}" overlaps "{other_key}": repeated blocks must not overlap')
                blocks.append((key, sl))
        return v
