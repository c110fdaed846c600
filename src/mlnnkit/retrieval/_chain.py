"""Chains: several physical-unit models wired by variable name into ONE ``keras.Model``.

A processor never runs one network: OC-SMART runs its autoassociative network (the scope
test), then the Rrs network, then the IOP networks on the Rrs; C2RCC runs rtosa -> rw ->
IOP and kd. :func:`chain` composes such models by the names of their variables
(:func:`mlnnkit.models.io_names`): a step's input is the output of an earlier step of
that name, else an input of the chain. The result is a plain functional model, one
input tensor ``inputs`` (rows x the chain's input variables) and one output tensor (every
step's outputs, then ``scope_error``), whose last layer
(:class:`~mlnnkit.retrieval._layers.ChainOutputs`) records the names and the steps. Each
step's layers are copied into the chain (named ``<step>__<layer>``), so the whole chain,
its flags included (:func:`mlnnkit.retrieval.flags_model`), compiles to one program. The
steps' input transforms are not copied: the chain maps each input column once
(``chain_inputs__transform``) for every step taking it, and a step taking an earlier
step's ``pow10`` (``exp``) output through ``log10`` (``ln``) takes that step's value in
network variables, before its output transform (the two maps cancel exactly).

Example:
    >>> import mlnnkit
    >>> from mlnnkit.retrieval import chain, chain_info
    >>> step = mlnnkit.legacy.load("net.h5", names="a,b,c,d,e,f,g", output_names="chl",
    ...                            transforms="log10:1-7", output_transforms="pow10")
    >>> aann = keras.saving.load_model("pace.keras")   # PACE_Lrc_aaNN.H5 --physical
    >>> model = chain([step], scope=aann, scope_metric="mean_rel")
    >>> chain_info(model)["output_names"][:1]
    ['chl']
    >>> chain_info(model)["output_names"][-1]
    'scope_error'
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from mlnnkit.errors import UserError
from mlnnkit.retrieval._layers import SCOPE_METRICS, ChainOutputs, PickColumns, ScopeError

__all__ = ["DEFAULT_SCOPE_THRESHOLDS", "chain", "chain_info", "is_chain", "refuse_chain"]

#: The out-of-scope threshold of each metric when none is given: OC-SMART's 0.07 for its
#: mean relative error, C2RCC's ``thresholdRtosaOOS`` 0.01 for its sum of differences.
DEFAULT_SCOPE_THRESHOLDS = {"mean_rel": 0.07, "sum_abs": 0.01}

SCOPE_OUTPUT = "scope_error"


def _step_io_names(model: keras.Model) -> tuple[list[str] | None, list[str] | None]:
    try:
        from mlnnkit.models import io_names
    except ImportError:  # before the physical-units work: the scaling layers' names
        from mlnnkit.predict_io import model_io_names as io_names
    ins, outs = io_names(model)
    return (list(ins) if ins else None), (list(outs) if outs else None)


def _as_model(m, what: str) -> tuple[keras.Model, str]:
    if isinstance(m, (str, Path)):
        from mlnnkit.models import load_model

        path = Path(m)
        if path.is_file() and path.suffix.lower() != ".keras":
            raise UserError(
                f"{path}: a chain step is a .keras model; import a legacy network first "
                f"(`mlnnkit import {path} --physical -o {path.stem}.keras`)"
            )
        return load_model(path, compile=False), str(path)
    if not isinstance(m, keras.Model):
        raise UserError(f"{what} must be a keras.Model or a .keras path, not {type(m).__name__}")
    return m, f"model {m.name!r}"


def _linear_layers(model: keras.Model, where: str) -> list:
    """The model's layers in order, checked to form one simple stack (what importers and
    ``keras.Sequential`` make), so the chain can copy them one after the other."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(
            f"{where}: a chain step takes one input and one output tensor "
            f"(this one has {len(model.inputs)} and {len(model.outputs)})"
        )
    if len(model.inputs[0].shape) != 2:
        raise UserError(f"{where}: a chain step takes rows of variables, not samples of shape "
                        f"{tuple(model.inputs[0].shape[1:])}")  # fmt: skip
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    prev = model.inputs[0]
    for layer in layers:
        try:
            ok = layer.input is prev
        except (AttributeError, ValueError):
            ok = False
        if not ok:
            raise UserError(
                f"{where}: layer {layer.name!r} does not simply follow the previous layer; a "
                "chain step must be one stack of layers (as `mlnnkit import` makes)"
            )
        prev = layer.output
    if prev is not model.outputs[0]:
        raise UserError(f"{where}: its output is not its last layer's; a chain step must be "
                        "one stack of layers")  # fmt: skip
    return layers


def _step_name(model: keras.Model, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", model.name) or "step"
    name, k = base, 2
    while name in taken or name == "chain":
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def _clone(layer, prefix: str, x):
    """A copy of ``layer`` (with its weights) named ``<prefix>__<name>``, applied to ``x``."""
    cfg = layer.get_config()
    cfg["name"] = f"{prefix}__{layer.name}"
    clone = type(layer).from_config(cfg)
    y = clone(x)
    clone.set_weights(layer.get_weights())
    return y


#: (a step's input transform, the output transform of the earlier step it takes the
#: variable from) pairs that cancel: the step takes the earlier step's value in network
#: variables (log10 of ``10**y`` is y), which is one map less each way and exact.
_CANCEL = {("log10", "pow10"), ("ln", "exp")}


def _split(layers: list) -> tuple[list[str] | None, list, Any]:
    """A step's layers as (its input transforms or None, the layers between, its
    OutputTransform or None)."""
    from mlnnkit.layers import InputTransform, OutputTransform

    tr_in = layers[0] if layers and isinstance(layers[0], InputTransform) else None
    rest = layers[1:] if tr_in is not None else list(layers)
    tr_out = rest[-1] if rest and isinstance(rest[-1], OutputTransform) else None
    core = rest[:-1] if tr_out is not None else rest
    return (list(tr_in.transforms) if tr_in is not None else None), core, tr_out


def _wire(sources: list, *, name: str, names: list[str], dtype: str):
    """PickColumns over ``sources`` (``(tensor, column)`` pairs), the tensors deduplicated."""
    srcs: list = []
    cols = []
    for t, c in sources:
        if not any(t is u for u in srcs):
            srcs.append(t)
        cols.append([next(i for i, u in enumerate(srcs) if u is t), int(c)])
    return PickColumns(cols, names=names, dtype=dtype, name=name)(
        srcs if len(srcs) > 1 else srcs[0]
    )


def _match(patterns: Sequence[str], names: list[str], what: str) -> list[str]:
    chosen: list[str] = []
    for p in patterns:
        hits = [n for n in names if n == p or fnmatch.fnmatchcase(n, p)]
        if not hits:
            shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
            raise UserError(f"{what} {p!r} matches none of the scope network's outputs ({shown})")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def chain(
    models: Sequence[keras.Model | str | Path],
    *,
    scope: keras.Model | str | Path | None = None,
    scope_metric: str = "mean_rel",
    scope_variables: Sequence[str] | str | None = None,
    scope_threshold: float | None = None,
    name: str = "chain",
) -> keras.Model:
    """Compose physical-unit models into one ``keras.Model``, connected by variable names.

    Steps run in the order given. A step's input is the output of an earlier step of
    the same name when there is one, else an input of the chain; the chain's inputs are
    the names no step produces (in order of first use), its outputs every step's outputs
    (in order) and, with a scope, ``scope_error`` last.

    Args:
        models: the steps: ``keras.Model`` objects (or ``.keras`` paths) that know their
            variable names (:func:`mlnnkit.models.io_names`), e.g. from ``mlnnkit import
            --physical``.
        scope: an autoassociative network (its outputs are physical variables that are
            also its inputs), run first on the chain's inputs; its reconstruction gives
            ``scope_error``. Default None (no scope test).
        scope_metric: ``"mean_rel"`` (default; OC-SMART: mean over the variables of
            ``|x'/x - 1|``) or ``"sum_abs"`` (C2RCC: sum of ``|x' - x|``).
        scope_variables: the scope outputs compared, names or globs (a list, or a comma
            string), e.g. ``["rtosa_779", "rtosa_865", "rtosa_885", "rtosa_1020"]``.
            Default: all its outputs.
        scope_threshold: ``scope_error`` above it sets the ``out_of_scope`` flag. Default:
            0.07 for ``mean_rel``, 0.01 for ``sum_abs``.
        name: the chain model's name (default ``"chain"``).

    Returns:
        The chain: a functional ``keras.Model``, rows of the chain's inputs to rows of its
        outputs; rows with an invalid input (NaN, Inf, a non-positive value under a log)
        are NaN in every output. Save it with ``model.save("chain.keras")``.

    Raises:
        UserError: a step without variable names, a name produced by two steps (both
            named), a step producing what an earlier step took as a chain input, a scope
            variable that is not among its inputs, an unknown metric.

    Example:
        >>> import keras, mlnnkit.layers as ml
        >>> def net(i, o):
        ...     x = keras.Input((len(i),))
        ...     h = ml.InputScaling([0.0] * len(i), [1.0] * len(i), names=i)(x)
        ...     h = keras.layers.Dense(len(o))(h)
        ...     return keras.Model(x, ml.OutputScaling([0.0] * len(o), [1.0] * len(o), names=o)(h))
        >>> model = chain([net(["a", "b"], ["c"]), net(["c", "a"], ["d"])])
        >>> chain_info(model)["input_names"], chain_info(model)["output_names"]
        (['a', 'b'], ['c', 'd'])
    """
    if isinstance(models, (keras.Model, str, Path)):
        models = [models]
    if not models:
        raise UserError("a chain needs at least one step (models is empty)")
    if scope_metric not in SCOPE_METRICS:
        raise UserError(
            f"scope_metric must be one of {', '.join(SCOPE_METRICS)}, not {scope_metric!r}"
        )
    if scope is None and (scope_variables is not None or scope_threshold is not None):
        raise UserError("scope_variables and scope_threshold need a scope network (pass scope)")
    if scope_threshold is None:
        scope_threshold = DEFAULT_SCOPE_THRESHOLDS[scope_metric]
    if not float(scope_threshold) >= 0:
        raise UserError(f"scope_threshold must be >= 0, got {scope_threshold}")

    entries: list[dict[str, Any]] = []  # role, model, where, names, layers
    todo = ([("scope", scope)] if scope is not None else []) + [("step", m) for m in models]
    taken: set[str] = set()
    for k, (role, m) in enumerate(todo):
        model, where = _as_model(m, "scope" if role == "scope" else f"models[{k}]")
        if is_chain(model):
            raise UserError(f"{where} is itself a chain; chain its steps instead")
        ins, outs = _step_io_names(model)
        n_in, n_out = int(model.inputs[0].shape[-1]), int(model.outputs[0].shape[-1])
        if ins is None or outs is None or len(ins) != n_in or len(outs) != n_out:
            raise UserError(
                f"{where} does not name its variables, so it cannot be chained by name: import "
                "it with `mlnnkit import NET --physical` (or --names/--output-names)"
            )
        entries.append({
            "role": role, "model": model, "where": where, "inputs": ins, "outputs": outs,
            "layers": _linear_layers(model, where), "name": _step_name(model, taken),
        })  # fmt: skip

    # Pass 1: resolve every step input to the chain's inputs or an earlier step's output.
    chain_inputs: list[str] = []
    first_user: dict[str, str] = {}
    produced: dict[str, tuple[int, int]] = {}  # name -> (entry index, column)
    for k, e in enumerate(entries):
        src = []
        for n in e["inputs"]:
            if n in produced:
                src.append(("step", *produced[n]))
            else:
                if n not in chain_inputs:
                    chain_inputs.append(n)
                    first_user[n] = e["where"]
                src.append(("input", chain_inputs.index(n)))
        e["sources"] = src
        if e["role"] == "scope":
            continue  # its outputs are reconstructions of its inputs, not new variables
        for j, n in enumerate(e["outputs"]):
            if n in produced:
                other = entries[produced[n][0]]["where"]
                raise UserError(f"output {n!r} is produced by both {other} and {e['where']}; "
                                "a chain's variable names must be unique")  # fmt: skip
            if n in first_user:
                raise UserError(
                    f"{e['where']} produces {n!r}, which {first_user[n]} (earlier in the chain) "
                    f"takes as an input of the chain; put {e['where']} before it"
                )
            if n == SCOPE_OUTPUT:
                raise UserError(f"{e['where']}: output name {SCOPE_OUTPUT!r} is the chain's own")
            produced[n] = (k, j)

    dtype = (
        "float64"
        if any("float64" in str(e["model"].inputs[0].dtype) for e in entries)
        else "float32"
    )
    x = keras.Input((len(chain_inputs),), dtype=dtype, name="inputs")
    from mlnnkit.layers import InputTransform

    # Every step runs without its own transform layers: the chain maps each of its input
    # columns once (one InputTransform shared by every step taking that column with that
    # map), and a step taking an earlier step's output through the inverse of that step's
    # output transform (log10 of a pow10 output) takes the value in network variables.
    for e in entries:
        e["in_kinds"], e["core"], e["tr_out"] = _split(e["layers"])
        e["kinds"] = e["in_kinds"] or ["identity"] * len(e["inputs"])
    xt_pairs: list[tuple[int, str]] = []
    for e in entries:
        for s, kind in zip(e["sources"], e["kinds"]):
            if s[0] == "input" and (s[1], kind) not in xt_pairs:
                xt_pairs.append((s[1], kind))
    if xt_pairs == [(c, k) for c, (_, k) in enumerate(xt_pairs)]:
        picked_x = x  # each input column once, in order: nothing to pick
    else:
        picked_x = _wire([(x, c) for c, _ in xt_pairs], name="chain_inputs__pick",
                         names=[chain_inputs[c] for c, _ in xt_pairs], dtype=dtype)  # fmt: skip
    xt = InputTransform(
        [k for _, k in xt_pairs], names=[chain_inputs[c] for c, _ in xt_pairs], dtype=dtype,
        name="chain_inputs__transform",
    )(picked_x)  # fmt: skip
    core_out: dict[int, Any] = {}
    phys_out: dict[int, Any] = {}
    outputs, out_names, checks, records = [], [], [xt], []
    scope_err = None
    for k, e in enumerate(entries):
        step_dtype = str(e["model"].inputs[0].dtype)
        step_dtype = "float64" if "float64" in step_dtype else "float32"
        wired: list = []
        mapped: list[tuple[Any, int]] = []  # earlier steps' physical outputs to transform
        mapped_kinds: list[str] = []
        for s, kind in zip(e["sources"], e["kinds"]):
            if s[0] == "input":
                wired.append((xt, xt_pairs.index((s[1], kind))))
                continue
            src = entries[s[1]]
            out_kind = list(src["tr_out"].transforms)[s[2]] if src["tr_out"] else "identity"
            if (kind, out_kind) in _CANCEL:
                wired.append((core_out[s[1]], s[2]))
            else:
                wired.append(("mapped", len(mapped)))
                mapped.append((phys_out[s[1]], s[2]))
                mapped_kinds.append(kind)
        if mapped:
            mapped_names = [n for (t, _), n in zip(wired, e["inputs"]) if t == "mapped"]
            m = InputTransform(
                mapped_kinds, names=mapped_names, dtype=step_dtype,
                name=f"{e['name']}__input_transform",
            )(_wire(mapped, name=f"{e['name']}__mapped", names=mapped_names, dtype=step_dtype))
            checks.append(m)
            wired = [(m, c) if t == "mapped" else (t, c) for t, c in wired]
        y = net_in = _wire(wired, name=f"{e['name']}__inputs", names=e["inputs"], dtype=step_dtype)
        for layer in e["core"]:
            y = _clone(layer, e["name"], y)
        core_out[k] = y
        phys_out[k] = _clone(e["tr_out"], e["name"], y) if e["tr_out"] is not None else y
        records.append({"name": e["name"], "role": e["role"], "inputs": e["inputs"],
                        "outputs": e["outputs"], "input_transforms": e["in_kinds"]})  # fmt: skip
        if e["role"] == "scope":
            pats = scope_variables
            if isinstance(pats, str):
                pats = [p.strip() for p in pats.split(",") if p.strip()]
            variables = _match(pats, e["outputs"], "scope variable") if pats else list(e["outputs"])
            missing = [v for v in variables if v not in e["inputs"]]
            if missing:
                raise UserError(
                    f"scope {e['where']}: output {missing[0]!r} is not one of its inputs; a scope "
                    "network reconstructs its inputs (choose --scope-variables among them)"
                )
            x_cols = [e["inputs"].index(v) for v in variables]
            y_cols = [e["outputs"].index(v) for v in variables]
            out_kinds = list(e["tr_out"].transforms) if e["tr_out"] is not None else []
            pairs = {(e["kinds"][i], out_kinds[j] if out_kinds else "identity")
                     for i, j in zip(x_cols, y_cols)}  # fmt: skip
            if scope_metric == "mean_rel" and len(pairs) == 1 and pairs <= _CANCEL:
                # OC-SMART's |x'/x - 1| from the logs the networks see: 10**(y' - log10 x)
                # - 1, one map less than rebuilding x' (and the ratio no less exact).
                scope_in, scope_out, logs = net_in, core_out[k], next(iter(pairs))[0]
            else:
                scope_in = _wire(
                    [(x, s[1]) if s[0] == "input" else (phys_out[s[1]], s[2])
                     for s in e["sources"]],
                    name=f"{e['name']}__physical_inputs", names=e["inputs"], dtype=step_dtype,
                )  # fmt: skip
                scope_out, logs = phys_out[k], None
            scope_err = ScopeError(
                scope_metric, x_cols, y_cols, float(scope_threshold), variables=variables,
                logs=logs, dtype=dtype, name=SCOPE_OUTPUT,
            )([scope_in, scope_out])  # fmt: skip
            scope_record = {"metric": scope_metric, "variables": variables,
                            "threshold": float(scope_threshold), "step": e["name"]}  # fmt: skip
        else:
            outputs.append(phys_out[k])
            out_names += e["outputs"]
    if scope_err is not None:
        outputs.append(scope_err)
        out_names.append(SCOPE_OUTPUT)
    # The checks: the mapped chain inputs (every input column is among them, and a NaN,
    # an Inf or a log of a non-positive value is NaN there) and every mapped earlier
    # output. A network's output is NaN only when its input is, so they need none.
    out = ChainOutputs(
        len(outputs), chain_inputs, out_names, records,
        scope_record if scope_err is not None else None, dtype=dtype, name="chain_outputs",
    )([*outputs, *checks])  # fmt: skip
    return keras.Model(x, out, name=re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "chain")


def _chain_layer(model) -> ChainOutputs | None:
    for layer in getattr(model, "layers", None) or []:
        if isinstance(layer, ChainOutputs):
            return layer
    return None


def is_chain(model) -> bool:
    """True when ``model`` is a chain made by :func:`chain` (saved and reloaded or not).

    Example:
        >>> is_chain(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
        False
    """
    return _chain_layer(model) is not None


def chain_info(model) -> dict[str, Any] | None:
    """What a chain records: ``input_names``, ``output_names``, ``steps`` (each ``name``,
    ``role``, ``inputs``, ``outputs``) and ``scope`` (``metric``, ``variables``,
    ``threshold``, ``step``; or None); None for a model that is not a chain.

    Example:
        >>> chain_info(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])) is None
        True
    """
    layer = _chain_layer(model)
    if layer is None:
        return None
    return {
        "input_names": list(layer.input_names),
        "output_names": list(layer.output_names),
        "steps": [dict(s) for s in layer.steps],
        "scope": dict(layer.scope) if layer.scope else None,
    }


def refuse_chain(model, where: str = "the model") -> None:
    """Raise a UserError when ``model`` is a chain: fine-tuning one would mix the steps'
    losses; fine-tune the step and chain again.

    Example:
        >>> refuse_chain(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    """
    info = chain_info(model)
    if info is None:
        return
    steps = ", ".join(s["name"] for s in info["steps"])
    raise UserError(
        f"{where} is a chain of {len(info['steps'])} networks ({steps}); fine-tune the step "
        "itself (`mlnnkit finetune STEP.keras ...`) and chain again (`mlnnkit chain ...`)"
    )


def describe_chain(model) -> str:
    """A few lines for ``mlnnkit inspect``: the chain's inputs, steps and outputs.

    Example:
        >>> m = mlnnkit.legacy.load("net.h5", transforms="log10:1-7", output_transforms="pow10")
        >>> print(describe_chain(mlnnkit.retrieval.chain([m])).splitlines()[0])
        chain:       chain (1 steps)
    """
    info = chain_info(model)
    if info is None:
        raise UserError("not a chain")

    def short(names):
        return ", ".join(names) if len(names) <= 8 else f"{', '.join(names[:4])}, ... {names[-1]}"

    lines = [
        f"chain:       {model.name} ({len(info['steps'])} steps)",
        f"inputs:      {len(info['input_names'])} ({short(info['input_names'])})",
    ]
    for k, s in enumerate(info["steps"], 1):
        role = " [scope]" if s["role"] == "scope" else ""
        lines.append(f"step {k}:      {s['name']}{role}: {len(s['inputs'])} in ({short(s['inputs'])}) "
                     f"-> {len(s['outputs'])} out ({short(s['outputs'])})")  # fmt: skip
    sc = info["scope"]
    if sc:
        lines.append(f"scope:       {sc['metric']} over {len(sc['variables'])} variables "
                     f"({short(sc['variables'])}), out of scope above {sc['threshold']:g}")  # fmt: skip
    lines.append(f"outputs:     {len(info['output_names'])} ({short(info['output_names'])})")
    return "\n".join(lines)
