# Over 400 lines: the study settings, its checks and the worker loop share one state (the study), so they stay together.
"""A study around ``mlnnkit.train.run``: settings, checks at the door, the worker loop.

Every trial is ``train.run(trial_config, None, extra_callbacks=[PruningCallback], data=ds)``,
the same code path as ``mlnnkit train``, on data loaded once per process. The worker
loop keeps the promise "the study ends with exactly N complete trials" with several
workers: under the study lock a worker counts COMPLETE (+ PRUNED with ``count_pruned``)
and RUNNING trials and starts a trial only while they are fewer than N; otherwise it
waits for the running ones (a pruned or crashed one frees its slot again).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlnnkit import _atomic
from mlnnkit.config import RunConfig
from mlnnkit.errors import Interrupted, UserError
from mlnnkit.tune import _results, _storage
from mlnnkit.tune._space import SearchSpace

if TYPE_CHECKING:
    import optuna

    from mlnnkit.data import Dataset

POLL_SECONDS = 2.0
MAX_FAILS_IN_A_ROW = 3
_MINIMISE = ("loss", "error", "mae", "mse", "rmse", "mape", "msle", "crossentropy", "hinge",
             "divergence", "poisson", "cosh")
_MAXIMISE = ("accuracy", "acc", "auc", "precision", "recall", "f1", "r2", "iou", "score")


@dataclass
class TuneSettings:
    """Resolved settings of one ``mlnnkit tune`` call: CLI option > ``[tune]`` > default."""

    trials: int
    metric: str
    direction: str | None
    sampler: str
    pruner: str
    timeout: float | None
    count_pruned: bool
    study_name: str
    storage: str
    out_dir: Path
    default_storage: bool = False  # the SQLite file in out_dir

    @classmethod
    def resolve(
        cls, cfg: RunConfig, *, config_path: Path | None = None, out_dir: Path | None = None,
        trials: int | None = None, timeout: float | None = None, study: str | None = None,
        storage: str | None = None, sampler: str | None = None, pruner: str | None = None,
        metric: str | None = None, direction: str | None = None,
    ) -> TuneSettings:
        t = cfg.tune
        if t is None:
            raise UserError(
                f"{config_path or 'the config'}: no [tune] section; add [tune.space] with the "
                "values to search (see docs/tune.md)"
            )
        name = study or cfg.name or (config_path.stem if config_path else "study")
        out = Path(out_dir) if out_dir else Path("runs") / f"{name}_tune"
        for opt, value, allowed in (
            ("--sampler", sampler, ("tpe", "random")),
            ("--pruner", pruner, ("median", "hyperband", "none")),
            ("--direction", direction, ("min", "max")),
        ):
            if value is not None and value not in allowed:
                raise UserError(f"{opt} {value!r}: use one of {', '.join(allowed)}")
        if trials is not None and trials < 1:
            raise UserError("--trials must be at least 1")
        if timeout is not None and timeout <= 0:
            raise UserError("--timeout must be > 0 seconds")
        return cls(
            trials=trials or t.trials,
            metric=metric or t.metric or "val_loss",
            direction=direction or t.direction,
            sampler=sampler or t.sampler,
            pruner=pruner or t.pruner,
            timeout=timeout or t.timeout,
            count_pruned=t.count_pruned,
            study_name=name,
            storage=_storage.normalize_url(storage) if storage else f"sqlite:///{out.resolve() / 'study.db'}",
            out_dir=out,
            default_storage=storage is None,
        )


@dataclass
class StudyResult:
    """What a worker leaves behind (the study itself is in the storage)."""

    study: optuna.Study
    settings: TuneSettings
    counts: dict[str, int]
    best: optuna.trial.FrozenTrial | None
    ran: list[int] = field(default_factory=list)
    stopped_by: str = "done"
    skipped_plots: dict[str, str] = field(default_factory=dict)
    importances: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- checks
def infer_direction(metric: str) -> str:
    """"min" or "max" from a metric's name (val_loss -> min, val_accuracy -> max)."""
    base = metric.removeprefix("val_").lower()
    if any(w in base for w in _MINIMISE):
        return "min"
    if any(w in base for w in _MAXIMISE):
        return "max"
    raise UserError(
        f"cannot tell whether {metric!r} should be minimised or maximised: pass "
        "--direction min or --direction max (or set tune.direction)"
    )


def logged_metrics(cfg: RunConfig, ds: Dataset) -> list[str]:
    """The names the compiled model logs each epoch on validation data (val_loss, ...)."""
    import keras

    from mlnnkit.build import build_model
    from mlnnkit.train import check_input_shape

    model = build_model(cfg, x_train=ds.x_train[:64])
    check_input_shape(model, ds.x_train, "training data")
    n = min(len(ds.x_val), 8)
    try:
        res = model.evaluate(ds.x_val[:n], ds.y_val[:n], verbose=0, return_dict=True)
    except ValueError as e:
        raise UserError(f"the model does not fit the data: {' '.join(str(e).split())[:400]}") from e
    keras.backend.clear_session()
    return [f"val_{k}" for k in res]


def _check_compatible(study: optuna.Study, space: SearchSpace, s: TuneSettings) -> None:
    """A study continued must score and search as it was started."""
    import optuna

    attrs = study.user_attrs.get("mlnnkit")
    direction = "max" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "min"
    where = f"study {s.study_name!r} in {_storage.shown(s.storage)}"
    if attrs is None:
        if study.get_trials(deepcopy=False):
            raise UserError(f"{where} was not made by mlnnkit tune; pass another --study name")
        return
    if attrs.get("metric") != s.metric or direction != s.direction:
        raise UserError(
            f"{where} scores trials by {attrs.get('metric')} ({direction}), not by {s.metric} "
            f"({s.direction}); continue it with --metric {attrs.get('metric')} --direction "
            f"{direction}, or pass a new --study name"
        )
    now = _space_json(space)
    old = attrs.get("space", {})
    if now != old:
        diff = sorted(k for k in set(now) | set(old) if now.get(k) != old.get(k))
        raise UserError(
            f"{where} was started with another search space (differs in: {', '.join(diff)}); "
            "pass a new --study name for the new space"
        )
    fixed = attrs.get("fixed")
    if fixed is not None:
        from mlnnkit.train import config_differences

        diff = config_differences(fixed, _fixed_json(space))
        if diff:
            shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
            raise UserError(
                f"{where} was started with another fixed configuration ({shown}); continue it "
                "with the config it was started with, or pass a new --study name"
            )


def _fixed_json(space: SearchSpace) -> dict[str, Any]:
    """The study's fixed configuration: every key of the config (paths absolute) that the
    search space does not set, as ``{dotted key: value}``; ``[tune]`` itself is left out
    (the trial count, sampler and pruner may change between sessions)."""
    from mlnnkit.train import _flatten, resume_fingerprint

    flat = _flatten(resume_fingerprint(space.config({})))
    searched = []
    for key in space.dims:
        searched.append("model.layers" if key.endswith(".repeat") else key)

    def is_searched(k: str) -> bool:
        return any(k == s or k.startswith((s + ".", s + "[")) for s in searched)

    return {k: v for k, v in flat.items() if not is_searched(k)}


def _space_json(space: SearchSpace) -> dict[str, str]:
    from optuna.distributions import distribution_to_json

    return {k: distribution_to_json(d) for k, d in space.distributions().items()}


def _sampler(kind: str, seed: int):
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: running trials of other workers count as bad, so workers spread out.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _pruner(kind: str, epochs: int):
    import optuna

    if kind == "median":
        # Judged against complete trials only, so not before the sampler's random start
        # (TPE: 10 trials) has completed; steps are epochs from 1, none is stopped after
        # its first epoch alone.
        return optuna.pruners.MedianPruner(n_startup_trials=10, n_warmup_steps=2)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.NopPruner()


# ------------------------------------------------------------------------------ run
def tune(
    cfg: RunConfig, settings: TuneSettings, *, where: str = "",
    log: Callable[[str], None] | None = None,
) -> StudyResult:
    """Run (or continue, or join) the study described by ``cfg``'s ``[tune]`` section.

    Checks everything before touching the study (search space, data, metric name,
    storage) and raises ``UserError`` naming the problem; then runs trials until the
    study holds ``settings.trials`` complete trials (or ``settings.timeout`` passed), and
    writes trials.csv, best.toml, best_model.keras and the plots to ``settings.out_dir``.

    Example:
        >>> from mlnnkit.config import load_config
        >>> cfg = load_config("tiny.toml")                 # [tune]: 2 trials, 2 epochs each
        >>> res = tune(cfg, TuneSettings.resolve(cfg, out_dir="runs/tune"), log=lambda s: None)
        >>> res.best.value > 0
        True
    """
    import optuna

    from mlnnkit.data import load_data

    log = log or (lambda msg: None)
    s = settings
    space = SearchSpace.from_config(cfg, where)
    space.check()
    base = space.config({})  # the config without [tune]
    if not s.default_storage:
        _storage.check_url(s.storage)  # fail fast, before loading data

    ds = load_data(base)
    if ds.x_val is None or len(ds.x_val) == 0:
        raise UserError(
            f"{where + ': ' if where else ''}trials are scored on validation data: set "
            "fit.validation_split (e.g. 0.2) or fit.validation"
        )
    names = logged_metrics(base, ds)
    if s.metric not in names:
        hint = f" (did you mean val_{s.metric}?)" if f"val_{s.metric}" in names else ""
        raise UserError(
            f"metric {s.metric!r} is not logged by this model{hint}; trials are scored on "
            f"validation data, the model logs: {', '.join(names)}"
        )
    s.direction = s.direction or infer_direction(s.metric)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _atomic.make_dir(s.out_dir)
    lock = _storage.StudyLock.for_url(s.storage, s.study_name)
    if not lock.shared:
        log(
            f"note: no cross-process lock for {_storage.shown(s.storage)}: with several "
            "workers the study may end with a few more complete trials than asked"
        )
    epochs_max = max([base.fit.epochs] + [
        int(d.bounds[1]) for k, d in space.dims.items() if k == "fit.epochs" and d.kind != "choices"
    ])
    study = None
    try:
        with lock:
            storage = _storage.open_storage(s.storage)
            study = _load_or_create(storage, space, s, epochs_max)
        return _work(study, lock, space, base, ds, s, log)
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise _interrupted(study, s, None) from None
    finally:
        lock.close()


def _interrupted(study, s: TuneSettings, trial_number: int | None) -> Interrupted:
    """The interrupt of a tuning worker, saying what the study keeps and how to go on."""
    where = f"study {s.study_name!r} in {_storage.shown(s.storage)}"
    if study is None:
        return Interrupted(f"interrupted; run the same command again to start {where}")
    from optuna.trial import TrialState

    complete = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
    stopped = (
        f"trial {trial_number} was stopped (marked FAIL and queued to run again); "
        if trial_number is not None else ""
    )
    return Interrupted(
        f"interrupted; {stopped}{where} keeps its {complete} complete trial(s) of "
        f"{s.trials}: run the same command again to continue it"
    )


class _DropInterruptedTrialLog:
    """Optuna logs a trial stopped by Ctrl-C as a failure, with the whole traceback and a
    second line "Trial N failed with value None."; the interrupt is reported in one line
    instead. Drops both (the second: the one right after the interrupt's record)."""

    def __init__(self):
        self.interrupted = False

    def filter(self, record) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, KeyboardInterrupt):
            self.interrupted = True
            return False
        return not (self.interrupted and "failed with value" in record.getMessage())


def _load_or_create(storage, space: SearchSpace, s: TuneSettings, epochs: int) -> optuna.Study:
    import optuna

    pruner = _pruner(s.pruner, epochs)
    try:
        study = optuna.load_study(study_name=s.study_name, storage=storage, pruner=pruner)
    except KeyError:
        study = optuna.create_study(
            study_name=s.study_name, storage=storage, pruner=pruner,
            direction="maximize" if s.direction == "max" else "minimize",
        )
    _check_compatible(study, space, s)
    attrs = study.user_attrs.get("mlnnkit")
    if attrs is not None and "fixed" not in attrs:  # a study of an older mlnnkit
        study.set_user_attr("mlnnkit", {**attrs, "fixed": _fixed_json(space)})
    if attrs is None:  # a new study
        study.set_user_attr(
            "mlnnkit",
            {"metric": s.metric, "space": _space_json(space), "fixed": _fixed_json(space)},
        )
        first = space.baseline() if space.base.tune.baseline else None
        if first is not None:
            study.enqueue_trial(first, user_attrs={"baseline": True})
    return study


def _work(study, lock, space, base, ds, s: TuneSettings, log) -> StudyResult:
    import keras
    import optuna
    from optuna.trial import TrialState

    from mlnnkit import train
    from mlnnkit.tune._pruning import PruningCallback

    counted = (TrialState.COMPLETE, TrialState.PRUNED) if s.count_pruned else (TrialState.COMPLETE,)
    deadline = time.monotonic() + s.timeout if s.timeout else None
    me = _storage.worker_id()
    ran: list[int] = []
    fails_in_a_row = 0
    stopped_by = "done"
    waiting_said = False

    def objective(trial: optuna.trial.Trial) -> float:
        trial.set_user_attr(_storage.WORKER_ATTR, me)  # who runs it: found dead at once
        lock.release()  # the trial exists (RUNNING): other workers may count it and go on
        ran.append(trial.number)
        tcfg = space.config(space.sample(trial))
        keras.backend.clear_session()
        pruning = PruningCallback(trial, s.metric)
        try:
            result = train.run(tcfg, None, verbose=0, extra_callbacks=[pruning], data=ds)
        except optuna.TrialPruned:
            trial.set_user_attr("epochs", pruning.epochs_done)
            raise
        # the batch size of the fit's own validation pass: its compiled step is reused
        val = train.evaluate(result.model, ds.x_val, ds.y_val, batch_size=tcfg.fit.batch_size)
        value = val[s.metric.removeprefix("val_")]
        trial.set_user_attr("epochs", result.metrics["epochs"])
        trial.set_user_attr("fit_seconds", result.metrics["fit_seconds"])
        trial.set_user_attr("test", result.metrics["test"])
        _results.keep_if_best(
            s.out_dir, result.model, study=s.study_name, number=trial.number, value=value,
            direction=s.direction, metric=s.metric,
            extra={"params": trial.params, "test": result.metrics["test"]},
        )
        return value

    while True:
        if deadline is not None and time.monotonic() > deadline:
            stopped_by = "timeout"
            break
        lock.acquire()
        claimed = False
        try:
            for n in _storage.fail_dead_trials(study):
                log(f"trial {n}: FAIL (its worker stopped: killed or crashed)")
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state in counted for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if done >= s.trials:
                break
            if done + running < s.trials:
                study.sampler = _sampler(s.sampler, base.seed + len(trials))
                claimed = True
        finally:
            if not claimed:
                lock.release()
        if not claimed:
            if not waiting_said:
                log(f"waiting for {running} running trial(s) of other workers ...")
                waiting_said = True
            time.sleep(POLL_SECONDS)
            continue
        waiting_said = False
        n_before = len(ran)
        quiet = _DropInterruptedTrialLog()
        optuna_log = optuna.logging.get_logger("optuna.study._optimize")
        optuna_log.addFilter(quiet)
        try:
            study.optimize(objective, n_trials=1, catch=(), gc_after_trial=False)
        except optuna.exceptions.UpdateFinishedTrialError:
            log(f"trial {ran[-1]}: was marked FAIL by another worker (no heartbeat); dropped")
        except KeyboardInterrupt:
            number = ran[-1] if len(ran) > n_before else None
            if number is not None:
                t = _trial(study, number)
                if t.state == TrialState.FAIL:  # run it again when the study continues
                    attrs = {"baseline": True} if t.user_attrs.get("baseline") else {}
                    study.enqueue_trial(t.params, user_attrs=attrs)
                _write_tables(study, space, s)
            raise _interrupted(study, s, number) from None
        finally:
            optuna_log.removeFilter(quiet)
            lock.release()
        if len(ran) == n_before:
            continue
        t = _trial(study, ran[-1])
        log(_describe(t, s.metric))
        fails_in_a_row = fails_in_a_row + 1 if t.state == TrialState.FAIL else 0
        if fails_in_a_row >= MAX_FAILS_IN_A_ROW:
            raise UserError(
                f"{fails_in_a_row} trials in a row failed ({s.metric} was not a finite "
                "number); narrow the search space, e.g. lower the learning-rate range"
            )
        _write_tables(study, space, s)

    return _finish(study, space, s, ran, stopped_by)


def _trial(study, number: int):
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _describe(t, metric: str) -> str:
    params = " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
    secs = t.duration.total_seconds() if t.duration else 0.0
    epochs = t.user_attrs.get("epochs", "?")
    state = t.state.name
    value = f"{metric} {_fmt(t.value)}" if t.value is not None and state == "COMPLETE" else ""
    note = "  (the config as written)" if t.user_attrs.get("baseline") else ""
    return f"trial {t.number:>3} {state:<8} {value:<22} {epochs} epochs {secs:6.1f} s  {params}{note}"


def _write_tables(study, space: SearchSpace, s: TuneSettings) -> None:
    with _results.folder_lock(s.out_dir):
        _results.write_trials_csv(study, s.out_dir / "trials.csv")
        _results.write_best_toml(
            study, space, s.out_dir / "best.toml", metric=s.metric,
            storage=_storage.shown(s.storage),
        )


def _finish(study, space, s: TuneSettings, ran: list[int], stopped_by: str) -> StudyResult:
    import warnings

    import optuna
    from optuna.trial import TrialState

    _write_tables(study, space, s)
    with _results.folder_lock(s.out_dir):
        skipped = _results.write_plots(study, s.out_dir, metric=s.metric)
    counts = {st.name: 0 for st in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    try:
        best = study.best_trial
    except ValueError:
        best = None
    importances: dict[str, float] = {}
    if counts["COMPLETE"] >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # A study too small for its importances to differ: Optuna says so in a
            # warning (they come out equal); the summary shows them as they are.
            warnings.filterwarnings(
                "ignore", message="Target and region quantiles", category=UserWarning
            )
            try:
                importances = dict(optuna.importance.get_param_importances(study))
            except (ValueError, RuntimeError):
                importances = {}
    return StudyResult(
        study=study, settings=s, counts=counts, best=best, ran=ran, stopped_by=stopped_by,
        skipped_plots=skipped, importances={k: float(v) for k, v in importances.items() if math.isfinite(v)},
    )
