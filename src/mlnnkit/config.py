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
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlnnkit.data._registry import SOURCES
from mlnnkit.data.tables import TableSource
from mlnnkit.errors import UserError
from mlnnkit.tune._grammar import TuneConfig

_STRICT = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------- data
# Each data source owns its config model (``CONFIG`` of its module in mlnnkit.data),
# collected in mlnnkit.data._registry.SOURCES.
DataConfig = Annotated[
    Union[tuple(m.CONFIG for m in SOURCES)],  # noqa: UP007 - a union built from the registry
    Field(discriminator="source"),
]
_SOURCE_BRANCHES = tuple(m.CONFIG.__name__ for m in SOURCES)


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
        elif part in _SOURCE_BRANCHES or str(part).startswith(
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
    from mlnnkit import _keras_names as build

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
