"""The search space of a run config: ``[tune.space]`` dimensions -> Optuna suggestions ->
a complete, re-validated run config per trial."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlnnkit.config import RunConfig, parse_config
from mlnnkit.errors import UserError
from mlnnkit.tune._grammar import Dimension, parse_path

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class SearchSpace:
    """The ``[tune.space]`` of a run config, bound to that config.

    ``sample(trial)`` draws one value per dimension from an Optuna trial (the parameter
    name is the dimension's config path); ``config(values)`` returns the run config with
    those values filled in, validated through the same schema as any run config.

    Example:
        >>> space = SearchSpace.from_config(cfg)                     # doctest: +SKIP
        >>> space.config({"fit.batch_size": 64}).fit.batch_size     # doctest: +SKIP
        64
    """

    base: RunConfig
    dims: dict[str, Dimension]
    where: str = ""

    @classmethod
    def from_config(cls, cfg: RunConfig, where: str = "") -> SearchSpace:
        if cfg.tune is None or not cfg.tune.space:
            raise UserError(
                f"{where + ': ' if where else ''}no [tune.space] section: add search "
                'dimensions, e.g. [tune.space] "compile.learning_rate" = '
                "{float = [1e-4, 1e-2], log = true} (see docs/tune.md)"
            )
        return cls(base=cfg, dims=dict(cfg.tune.space), where=where)

    # ------------------------------------------------------------------ optuna side
    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """One Optuna distribution per dimension, keyed by config path."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        out: dict[str, Any] = {}
        for key, d in self.dims.items():
            if d.kind == "choices":
                out[key] = CategoricalDistribution(list(d.choices))
            elif d.kind == "int":
                out[key] = IntDistribution(*d.bounds, log=d.log, step=int(d.step or 1))
            else:
                out[key] = FloatDistribution(*map(float, d.bounds), log=d.log, step=d.step)
        return out

    def sample(self, trial: optuna.trial.Trial) -> dict[str, Any]:
        """Draw a value for every dimension from ``trial``."""
        values: dict[str, Any] = {}
        for key, dist in self.distributions().items():
            values[key] = _suggest(trial, key, dist)
        return values

    # ------------------------------------------------------------------ config side
    def config(self, values: dict[str, Any]) -> RunConfig:
        """The base config with ``values`` (path -> value) filled in, re-validated.

        Indices in paths refer to the layers as written in the config; a
        ``model.layers[a:b].repeat = n`` then repeats that block n times (its copies share
        the values sampled for it).
        """
        data = self.base.to_dict()
        data.pop("tune", None)
        repeats: list[tuple[tuple[int, int], int]] = []
        for key, value in values.items():
            parts = parse_path(key)
            if parts[-1] == "repeat":
                sl = parts[-2] if isinstance(parts[-2], tuple) else (parts[-2], parts[-2] + 1)
                n_layers = len(data["model"]["layers"])
                if sl[1] > n_layers:
                    raise UserError(
                        f'{self._where()}tune.space."{key}": model.layers has {n_layers} '
                        f"layers (indices 0..{n_layers - 1})"
                    )
                repeats.append((sl, int(value)))
            else:
                _set(data, parts, value, key, self._where())
        layers = data["model"]["layers"]
        for (a, b), n in sorted(repeats, reverse=True):
            block = layers[a:b]
            layers[a:b] = [copy.deepcopy(layer) for _ in range(n) for layer in block]
        return parse_config(data, base_dir=self.base.base_dir, where=self.where)

    def baseline(self) -> dict[str, Any] | None:
        """The config's own value of every dimension (1 for a repeat), or None when one is
        not set in the config or lies outside its range."""
        data = self.base.to_dict()
        out: dict[str, Any] = {}
        for key in self.dims:
            parts = parse_path(key)
            if parts[-1] == "repeat":
                value: Any = 1
            else:
                try:
                    value = _get(data, parts)
                except (KeyError, IndexError, TypeError):
                    return None
            if not self.dims[key].contains(value):
                return None
            out[key] = value
        return out

    def check(self) -> None:
        """Validate every dimension at its ends (low and high, or each choice) through the
        run-config schema, so that a path that does not exist or a value a layer rejects
        fails before any trial runs, naming the dimension."""
        for key, d in self.dims.items():
            values = list(d.choices) if d.kind == "choices" else list(d.bounds)
            for v in values:
                try:
                    self.config({key: v})
                except UserError as e:
                    msg = str(e).removeprefix(f"{self.where}: ")
                    if msg.startswith("tune.space"):
                        raise  # already names the dimension (a path that does not exist)
                    raise UserError(
                        f'{self._where()}tune.space."{key}" = {v!r} does not give a valid '
                        f"config: {msg}"
                    ) from None
        # all lows together and all highs together (e.g. the smallest net with the largest step)
        for end in (0, 1):
            values = {
                k: (d.choices[0] if d.kind == "choices" else d.bounds[end])
                for k, d in self.dims.items()
            }
            try:
                self.config(values)
            except UserError as e:
                msg = str(e).removeprefix(f"{self.where}: ")
                raise UserError(
                    f"{self._where()}tune.space at its {'low' if end == 0 else 'high'} ends "
                    f"{values} does not give a valid config: {msg}"
                ) from None

    def _where(self) -> str:
        return f"{self.where}: " if self.where else ""


def _suggest(trial: optuna.trial.Trial, name: str, dist) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def _get(data: dict, parts: list) -> Any:
    node: Any = data
    for part in parts:
        node = node[part]
    return node


def _set(data: dict, parts: list, value: Any, key: str, where: str) -> None:
    """Set ``data[parts...] = value``; the last key may be new (the schema then judges it),
    every key before it must exist."""
    node: Any = data
    walked = ""
    for i, part in enumerate(parts[:-1]):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                n = len(node) if isinstance(node, list) else 0
                raise UserError(
                    f'{where}tune.space."{key}": {walked} has {n} entries '
                    f"(indices 0..{n - 1}), no [{part}]"
                )
            node = node[part]
            walked += f"[{part}]"
        else:
            if not isinstance(node, dict) or part not in node:
                target = f"{walked}.{part}" if walked else part
                raise UserError(
                    f'{where}tune.space."{key}": the config has no {target}; '
                    "add it to the config to tune a value inside it"
                )
            node = node[part]
            walked = f"{walked}.{part}" if walked else part
    last = parts[-1]
    if isinstance(last, int) or not isinstance(node, dict):
        raise UserError(f'{where}tune.space."{key}": must end in a key such as .units')
    node[last] = value
