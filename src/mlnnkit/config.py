"""The run config: one training run described in TOML, validated at the door.

A run config holds what the seed's code holds: where the data come from, the layer stack
(each layer by its Keras class name and keyword arguments), compile settings, fit
settings and callbacks. Unknown keys, unknown layer/optimizer/loss names and bad values
are rejected with a message that names the key, e.g.::

    error: examples/bad.toml: model.layers[1].units: Dense rejected units='many' ...

Example (the seed's MNIST classifier)::

    name = "seed_mnist"
    seed = 42
    [data]
    source = "mnist"
    [[model.layers]]
    type = "Flatten"
    [[model.layers]]
    type = "Dense"
    units = 128
    activation = "relu"
    [[model.layers]]
    type = "Dropout"
    rate = 0.2
    [[model.layers]]
    type = "Dense"
    units = 10
    activation = "softmax"
    [compile]
    optimizer = "adam"
    loss = "sparse_categorical_crossentropy"
    metrics = ["accuracy"]
    [fit]
    epochs = 5
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlnnkit.errors import UserError

_STRICT = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------- data
class _Source(BaseModel):
    model_config = _STRICT


class ImageSource(_Source):
    """MNIST-style image sets: the standard idx files, from a local folder or Keras."""

    source: Literal["mnist", "fashion_mnist"]
    data_dir: Path | None = Field(
        None,
        description="Folder with the four idx(.gz) files (or mnist.npz). Default: Debian's "
        "/usr/share/datasets/<name>, then the Keras cache/download.",
    )
    train_size: int | None = Field(None, gt=0, description="Use only the first N training images.")
    test_size: int | None = Field(None, gt=0, description="Use only the first N test images.")
    classes: list[int] | None = Field(None, description="Keep only these labels (relabelled 0..k-1).")
    scale: float = Field(255.0, gt=0, description="Pixels are divided by this (0..255 -> 0..1).")


class AutoMpgSource(_Source):
    """The Auto MPG table (vega_datasets `cars`): predict Miles_per_Gallon."""

    source: Literal["auto_mpg"]
    test_fraction: float = Field(0.2, gt=0, lt=1)


class TableSource(_Source):
    """A table with named feature and target columns: csv, parquet, or npz arrays."""

    source: Literal["csv", "npz", "parquet"]
    path: Path
    features: list[str] | str = Field(
        description="Feature columns: a list, a comma list, or a glob such as 'Rrs_*'."
    )
    targets: list[str] | str = Field(description="Target columns, like `features`.")
    test_fraction: float = Field(0.2, ge=0, lt=1)
    test_path: Path | None = Field(
        None, description="A separate test table (then test_fraction is ignored)."
    )


DataConfig = Annotated[
    ImageSource | AutoMpgSource | TableSource, Field(discriminator="source")
]


# -------------------------------------------------------------------------------- model
class LayerSpec(BaseModel):
    """One layer: `type` is a Keras layer class name (or an mlnnkit layer); the other keys
    are that class's keyword arguments."""

    model_config = ConfigDict(extra="allow")
    type: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModelConfig(BaseModel):
    model_config = _STRICT
    input_shape: list[int] | None = Field(
        None, description="Shape of one sample; default: taken from the data."
    )
    normalize: bool = Field(
        False,
        description="Put a Normalization layer first, adapted on the training split only.",
    )
    layers: list[LayerSpec] = Field(min_length=1)


# ------------------------------------------------------------------------------ compile
class NamedObject(BaseModel):
    """A Keras object given by class name plus keyword arguments."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CompileConfig(BaseModel):
    model_config = _STRICT
    optimizer: str | NamedObject = "adam"
    learning_rate: float | NamedObject | None = Field(
        None,
        description="A number, or a schedule from keras.optimizers.schedules given as "
        "{name = 'ExponentialDecay', initial_learning_rate = ..., ...}.",
    )
    loss: str | NamedObject = "mse"
    metrics: list[str] = Field(default_factory=list)

    @field_validator("learning_rate")
    @classmethod
    def _positive(cls, v):
        if isinstance(v, float) and v <= 0:
            raise ValueError("must be > 0")
        return v


# ---------------------------------------------------------------------------------- fit
class FitConfig(BaseModel):
    model_config = _STRICT
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(32, ge=1)
    validation_split: float = Field(
        0.0, ge=0, lt=1, description="Hold out the last fraction of the training rows."
    )
    validation: TableSource | None = Field(
        None, description="A separate validation table (instead of validation_split)."
    )
    shuffle: bool = True
    engine: Literal["auto", "keras", "fast"] = Field(
        "auto", description="auto: the fast path when the model allows it, else Keras fit."
    )

    @model_validator(mode="after")
    def _one_validation(self):
        if self.validation is not None and self.validation_split > 0:
            raise ValueError("give either validation_split or validation, not both")
        return self


class EarlyStoppingConfig(BaseModel):
    model_config = _STRICT
    monitor: str = "val_loss"
    patience: int = Field(10, ge=0)
    min_delta: float = Field(0.0, ge=0)
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best_weights: bool = True
    start_from_epoch: int = Field(0, ge=0)


class CheckpointConfig(BaseModel):
    model_config = _STRICT
    monitor: str = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"


class ReduceLROnPlateauConfig(BaseModel):
    model_config = _STRICT
    monitor: str = "val_loss"
    factor: float = Field(0.1, gt=0, lt=1)
    patience: int = Field(10, ge=0)
    min_delta: float = Field(1e-4, ge=0)
    min_lr: float = Field(0.0, ge=0)
    mode: Literal["auto", "min", "max"] = "auto"


class CallbacksConfig(BaseModel):
    model_config = _STRICT
    early_stopping: EarlyStoppingConfig | None = None
    checkpoint: CheckpointConfig | None = Field(
        None, description="Keep the best model seen so far in RUNDIR/checkpoints/best.keras."
    )
    reduce_lr_on_plateau: ReduceLROnPlateauConfig | None = None
    resume: bool = Field(
        True,
        description="Back up after every epoch (Keras BackupAndRestore) so that a killed run "
        "started again with the same --out continues from its last finished epoch.",
    )


# --------------------------------------------------------------------------------- tune
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


# ------------------------------------------------------------------------------- a run
class RunConfig(BaseModel):
    model_config = _STRICT
    name: str | None = None
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of every random choice (0 to 2**32 - 1).")
    data: DataConfig
    model: ModelConfig
    compile: CompileConfig = Field(default_factory=CompileConfig)
    fit: FitConfig = Field(default_factory=FitConfig)
    callbacks: CallbacksConfig = Field(default_factory=CallbacksConfig)
    tune: TuneConfig | None = Field(
        None, description="Search space for `mlnnkit tune` (ignored by `mlnnkit train`)."
    )

    # Where relative paths in the config are resolved from (the config file's folder).
    base_dir: Path = Field(default=Path("."), exclude=True)

    def resolve(self, p: Path | None) -> Path | None:
        if p is None:
            return None
        p = Path(p).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def to_dict(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """The config as plain data (what `to_toml` writes).

        ``relative_to``: a folder the written config will live in; relative file paths
        (data.path, data.data_dir, ...) are rewritten to be relative to it, so the copy
        finds the same files. Default: paths as given.
        """
        out = self.model_dump(mode="json", exclude_none=True, by_alias=True, exclude={"base_dir"})
        if relative_to is not None:
            for keys, p in _path_fields(self):
                if not Path(p).expanduser().is_absolute():
                    where = out
                    for k in keys[:-1]:
                        where = where[k]
                    target = os.path.abspath(self.base_dir / p)
                    where[keys[-1]] = os.path.relpath(target, os.path.abspath(relative_to))
        return out

    def to_toml(self, relative_to: str | Path | None = None) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict(relative_to))


def _path_fields(model: BaseModel, keys: tuple = ()):
    """(key path, value) of every ``Path`` value in a config tree."""
    for name in type(model).model_fields:
        if name == "base_dir":
            continue
        value = getattr(model, name)
        if isinstance(value, Path):
            yield keys + (name,), value
        elif isinstance(value, BaseModel):
            yield from _path_fields(value, keys + (name,))


# ------------------------------------------------------------------------------ loading
def _loc(loc: tuple) -> str:
    out = ""
    for i, part in enumerate(loc):
        if i == 2 and tuple(loc[:2]) == ("tune", "space"):
            out += f'."{part}"'  # a search-space key is a whole dotted path: quote it
        elif isinstance(part, int):
            out += f"[{part}]"
        elif part in ("ImageSource", "AutoMpgSource", "TableSource") or str(part).startswith(
            ("str", "NamedObject", "float", "list[")
        ):
            continue  # union-branch names pydantic adds to the location
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(err: ValidationError, where: str = "") -> str:
    """One line naming every offending key."""
    parts = []
    seen = set()
    for e in err.errors():
        key = _loc(e["loc"])
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "missing (required)"
        elif e["type"] == "union_tag_invalid":
            msg = e["msg"].replace("Input tag", "unknown value").replace(
                "found using 'source'", ""
            )
        else:
            msg = e["msg"].removeprefix("Value error, ")
        if (key, msg) in seen:
            continue
        seen.add((key, msg))
        parts.append(f"{key}: {msg}")
    prefix = f"{where}: " if where else ""
    return prefix + "; ".join(parts[:5]) + (f" (and {len(parts) - 5} more)" if len(parts) > 5 else "")


def parse_config(data: dict[str, Any], *, base_dir: Path = Path("."), where: str = "") -> RunConfig:
    """Validate a config given as a dict (the TOML's content)."""
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err, where)) from None
    cfg.base_dir = Path(base_dir)
    check_keras_names(cfg, where)
    return cfg


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run config. Relative paths in it are relative to its folder."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"config file not found: {path}")
    if path.is_dir():
        hint = f" (e.g. {path / 'config.toml'})" if (path / "config.toml").is_file() else ""
        raise UserError(f"config {path} is a folder: give the TOML file{hint}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text (TOML) file") from None
    except OSError as e:
        raise UserError(f"cannot read config {path}: {e.strerror or e}") from None
    return parse_config(data, base_dir=path.parent, where=str(path))


def check_keras_names(cfg: RunConfig, where: str = "") -> None:
    """Check layer, optimizer, loss, metric and schedule names against Keras (and that each
    layer accepts its keyword arguments), naming the key at fault."""
    from mlnnkit import build

    prefix = f"{where}: " if where else ""
    for i, spec in enumerate(cfg.model.layers):
        try:
            build.make_layer(spec)
        except UserError as e:
            raise UserError(f"{prefix}model.layers[{i}]: {e}") from None
    try:
        build.make_optimizer(cfg.compile)
    except UserError as e:
        raise UserError(f"{prefix}compile.{e}") from None
    try:
        build.make_loss(cfg.compile.loss)
    except UserError as e:
        raise UserError(f"{prefix}compile.loss: {e}") from None
    for j, m in enumerate(cfg.compile.metrics):
        try:
            build.make_metric(m)
        except UserError as e:
            raise UserError(f"{prefix}compile.metrics[{j}]: {e}") from None
