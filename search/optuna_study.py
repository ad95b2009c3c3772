"""The Optuna baseline: a study over per-group pruning ratios, scored by the very environment the agent learns in.

Each trial suggests one ratio per prunable group (``suggest_float(group, min_ratio, max_ratio)``), maps it to the
env's action (``a = 2·(r − min)/(max − min) − 1``) and steps the :class:`~prunegym.env.pruning_env.PruningEnv`
through one episode, so the action wall, the budget, the evaluator (BN re-calibration, short finetune, val split)
and the reward are exactly the agent's. The trial's ``params`` are the suggested ratios; its ``policy`` user
attribute holds the ratios after the action wall, i.e. what was evaluated. The budget is also recorded with
``trial.set_constraint("budget", resource_ratio − target_ratio)`` (feasible when ≤ 0), which Optuna's TPE and
NSGA samplers, ``best_trial`` and ``best_trials`` honour.

Objectives (``StudyConfig.objectives``): ``reward`` (single, maximized; TPE by default), or ``accuracy,latency`` /
``accuracy,macs`` / ``accuracy,params`` (maximize val accuracy %, minimize latency ms or the MACs/params ratio;
NSGA-II/III or multi-objective TPE) whose Pareto front is plotted and exported with ``prunegym optuna best``.

With ``finetune_steps > 0`` and a single objective, the evaluator reports val accuracy (%) before the finetune
(step 0) and every ``report_every`` steps; those are the trial's intermediate values, and the MedianPruner stops a
trial whose accuracy is below the median of earlier trials at the same step (Optuna cannot prune multi-objective
studies, so there the pruner is off).

Many workers: point several processes (or machines) at one ``--storage`` database with the same study name; each
runs ``n_trials`` trials of its own, records only its own trials in its own run folder, and samples with its own
seed (derived from the study seed and a worker id kept in ``study.yaml``). Rerunning a run folder continues: the
worker's finished trials (COMPLETE or PRUNED) count towards ``n_trials``, and trials left RUNNING by a crash of
this worker are marked FAIL.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from prunegym.core.errors import UserError
from prunegym.core.io import write_yaml
from prunegym.core.models import model_info
from prunegym.core.policy import Policy
from prunegym.core.records import ProgressFn
from prunegym.core.run_folder import STUDY_FILE
from prunegym.env.pruning_env import PruningEnv
from prunegym.search.optuna_config import (
    OBJECTIVES,
    SAMPLERS,
    StudyConfig,
    make_pruner,
    make_sampler,
    sampler_seed,
)
from prunegym.search.optuna_objective import TrialObjective
from prunegym.search.optuna_plots import PARETO_FILE, TRIALS_FILE, ParetoPoint, pareto_front, plot_pareto, plot_trials
from prunegym.search.optuna_records import FINISHED, TrialRecorder
from prunegym.search.optuna_storage import StorageSpec, open_storage, resolve_storage

__all__ = [
    "OBJECTIVES",
    "SAMPLERS",
    "STUDY_FILE",
    "StudyConfig",
    "StudySummary",
    "load_run_study",
    "make_sampler",
    "run_study",
    "study_points",
    "summary_dict",
]

log = logging.getLogger(__name__)

LOCK_FILE = ".optuna.lock"
# attributes of the study that must match for a worker to join it
_ATTR_PROBLEM = "prunegym_problem"
_ATTR_OBJECTIVES = "prunegym_objectives"
_ATTR_COST = "prunegym_cost_key"


@dataclass(frozen=True)
class StudySummary:
    """Outcome of :func:`run_study` for this worker (``pareto`` and ``study_trials`` cover the whole study).

    Args:
        trials: this worker's finished trials (complete + pruned); ``resumed_from`` of them came from earlier runs.
        best_trial: number of this worker's best feasible-reward trial (the one in ``best_policy.yaml``)
        pareto: trial numbers of the study's accuracy/cost Pareto front (feasible complete trials)
    """

    run_dir: Path
    study_name: str
    storage: str
    worker: str
    sampler: str
    objectives: str
    trials: int
    complete: int
    pruned: int
    resumed_from: int
    study_trials: int
    best_trial: int | None
    best_reward: float | None
    best_accuracy: float | None
    best_policy: Mapping[str, float] | None
    cost_key: str
    pareto: tuple[int, ...]
    plots: tuple[Path, ...] = field(default_factory=tuple)


# ----------------------------------------------------------------------------------------------- helpers


def problem_signature(env: PruningEnv) -> dict[str, Any]:
    """What must be equal for two workers to share a study (paths of model/data may differ between machines)."""
    ec, ev = env.config, env.evaluator.config
    return {
        "groups": {g: int(n) for g, n in env.table.channels.items()},
        "base_macs": int(env.table.macs),
        **{k: getattr(ec, k) for k in ("target", "target_ratio", "reward", "min_ratio", "max_ratio", "action_wall")},
        **{
            k: getattr(ev, k)
            for k in ("val_size", "bn_recalib_images", "finetune_steps", "finetune_lr", "criterion", "round_to", "seed")
        },
        "latency": None if env.latency is None else type(env.latency).__name__,
    }


def policy_template(env: PruningEnv) -> Policy:
    """Metadata every exported policy carries (model, rounding, criterion, input shape)."""
    info = model_info(env.evaluator.model)
    ev = env.evaluator
    return Policy(
        ratios={},
        source="optuna",
        model=info.name if info else "",
        round_to=ev.config.round_to,
        criterion=ev.config.criterion,
        input_shape=ev.input_shape,
    )


def cost_key_for(config: StudyConfig, env: PruningEnv) -> str:
    """The x axis of the Pareto plot: the second objective, else latency when measured, else MACs."""
    objectives = OBJECTIVES[config.objectives]
    if len(objectives) > 1:
        return objectives[1][0]
    return "latency_ms" if env.latency is not None else "macs_ratio"


@contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    """One process per run folder (two would interleave their records)."""
    path = run_dir / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            raise UserError(
                f"run folder {run_dir} is in use by another process (pid {pid}); wait for it or choose another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_meta(run_dir: Path, *, config: StudyConfig, storage: StorageSpec) -> dict[str, Any]:
    """``study.yaml`` as it will be written: which study this run folder works for, and its worker id.

    Raises:
        UserError: The folder already works for another study or storage.
    """
    path = run_dir / STUDY_FILE
    shown = storage.saved
    old: dict[str, Any] = {}
    if path.exists():
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        was = (old.get("storage"), old.get("study_name"))
        if was != (shown, config.study_name):
            raise UserError(
                f"{run_dir} works for study '{was[1]}' in {was[0] or 'its own study.db'}, not '{config.study_name}' in "
                f"{shown or 'its own study.db'}; pass the same --storage/--study or choose another --out"
            )
    return {
        "method": "optuna",
        "worker": old.get("worker") or uuid.uuid4().hex[:12],
        "study_name": config.study_name,
        "storage": shown,
        "sampler": config.sampler,
        "objectives": config.objectives,
        "seed": config.seed,
        "n_trials": config.n_trials,
    }


def _open_study(
    storage: optuna.storages.BaseStorage, *, config: StudyConfig, env: PruningEnv, display: str
) -> optuna.Study:
    study = optuna.create_study(
        storage=storage, study_name=config.study_name, directions=config.directions, load_if_exists=True
    )
    problem = problem_signature(env)
    attrs = study.user_attrs
    if _ATTR_PROBLEM not in attrs:
        if study.trials:
            raise UserError(f"study '{config.study_name}' in {display} was not made by prunegym; pick another --study")
        study.set_user_attr(_ATTR_PROBLEM, problem)
        study.set_user_attr(_ATTR_OBJECTIVES, config.objectives)
        study.set_user_attr(_ATTR_COST, cost_key_for(config, env))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([key for key, _ in OBJECTIVES[config.objectives]])  # dashboard axis names
        return study
    if attrs.get(_ATTR_OBJECTIVES) != config.objectives:
        raise UserError(
            f"study '{config.study_name}' in {display} optimizes {attrs.get(_ATTR_OBJECTIVES)}, not "
            f"{config.objectives}; pass --objectives {attrs.get(_ATTR_OBJECTIVES)} or another --study"
        )
    saved = attrs[_ATTR_PROBLEM]
    for key, value in problem.items():
        if _jsonable(saved.get(key)) != _jsonable(value):
            raise UserError(
                f"study '{config.study_name}' in {display} searches another problem ({key}: {saved.get(key)!r} there, "
                f"{value!r} here); use the same settings or another --study"
            )
    return study


def _jsonable(value: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(value))


def study_points(study: optuna.Study, *, cost_key: str) -> list[ParetoPoint]:
    """Every complete trial of the study in the accuracy/cost plane (feasibility from its budget constraint)."""
    points = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        acc, cost = t.user_attrs.get("accuracy"), t.user_attrs.get(cost_key)
        if acc is None or cost is None:
            continue
        ok = all(c <= 0.0 for c in t.constraints.values())
        points.append(ParetoPoint(number=t.number, accuracy=float(acc), cost=float(cost), feasible=ok))
    return points


def open_run_storage(run_dir: Path, *, storage: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The storage a run folder's study lives in (``storage`` overrides the one in ``study.yaml``) and that file."""
    run_dir = Path(run_dir)
    path = run_dir / STUDY_FILE
    if not path.exists():
        raise UserError(f"{run_dir} holds no Optuna study ({STUDY_FILE}); run `prunegym optuna run --out {run_dir}`")
    meta = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    spec = resolve_storage(storage if storage is not None else meta.get("storage"), run_dir=run_dir)
    return open_storage(spec, heartbeat_s=0), {**meta, "storage_display": spec.display}


def load_run_study(run_dir: Path, *, storage: str | None = None) -> tuple[optuna.Study, dict[str, Any]]:
    """Open the study a run folder worked for (``storage`` overrides the one in ``study.yaml``)."""
    st, meta = open_run_storage(run_dir, storage=storage)
    try:
        study = optuna.load_study(study_name=meta["study_name"], storage=st)
    except KeyError:
        where = meta["storage_display"]
        raise UserError(f"study '{meta.get('study_name')}' is not in {where}; check --storage") from None
    return study, meta


# ----------------------------------------------------------------------------------------------- the run


def run_study(
    *,
    env: PruningEnv,
    config: StudyConfig,
    run_dir: Path,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    progress: ProgressFn | None = None,
    enqueue: Sequence[Policy | Mapping[str, float]] = (),
) -> StudySummary:
    """Run (or continue) this worker's share of the study until it has ``n_trials`` finished trials.

    Writes into ``run_dir``: ``study.yaml`` (study, storage, worker id), ``study.db`` (unless ``storage`` names
    another), ``episodes.jsonl`` (one line per finished trial of this worker), ``best_policy.yaml``,
    ``tensorboard/optuna``, ``search_curve.png`` and ``pareto.png``.

    Args:
        env: the environment (its evaluator, budget and reward define the problem)
        config: the study settings; ``storage``, ``study_name`` and ``n_trials`` override its fields.
        run_dir: this worker's run folder (created if missing)
        progress: ``progress(trials_done, n_trials, best_reward)`` after every finished trial.
        enqueue: policies (or ``{group: ratio}``) to evaluate first, e.g. the agent's best or a uniform one; each
            is enqueued once per study (skipped if the study already has it)
    """
    overrides = {"storage": storage, "study_name": study_name, "n_trials": n_trials}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    env = env.unwrapped if not isinstance(env, PruningEnv) else env  # type: ignore[assignment]
    if not isinstance(env, PruningEnv):
        raise TypeError(f"run_study needs a PruningEnv, got {type(env).__name__}")
    if any(k == "latency_ms" for k, _ in OBJECTIVES[config.objectives]) and env.latency is None:
        raise UserError(f"objectives {config.objectives} need a latency model; pass --latency measured or predicted")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _run_lock(run_dir):
        spec = resolve_storage(config.storage, run_dir=run_dir)
        meta = _run_meta(run_dir, config=config, storage=spec)
        worker = meta["worker"]
        st = open_storage(spec, heartbeat_s=config.heartbeat)
        study = _open_study(st, config=config, env=env, display=spec.display)
        write_yaml(run_dir / STUDY_FILE, meta)  # only once the study is known to open
        _fail_own_running(study, st, worker=worker, name=config.study_name)
        trials = study.get_trials(deepcopy=False)
        recorder = TrialRecorder(
            run_dir=run_dir, worker=worker, total=config.n_trials, progress=progress, tensorboard=config.tensorboard
        )
        try:
            records = recorder.sync(trials)
            start = len(records)
            study.sampler = make_sampler(
                config, seed=sampler_seed(config.seed, worker=worker, existing=len(trials), shared=not spec.local)
            )
            study.pruner = make_pruner(config, env)
            template = policy_template(env)
            _enqueue(study, env=env, policies=enqueue)
            remaining = config.n_trials - start
            if start:
                log.info("continuing %s: %d of %d trials done", run_dir, start, config.n_trials)
            if remaining > 0:
                objective = TrialObjective(env=env, config=config, worker=worker, template=template)
                study.optimize(objective, n_trials=remaining, callbacks=[recorder], catch=())
        finally:
            recorder.close()
            try:
                plots = _plots(study, recorder=recorder, run_dir=run_dir, config=config, env=env)
            except Exception:  # never hide the error that ended the run
                log.warning("could not draw the study's plots", exc_info=True)
                plots = ()
        return _summary(
            study,
            recorder=recorder,
            run_dir=run_dir,
            config=config,
            spec=spec,
            worker=worker,
            start=start,
            env=env,
            plots=plots,
        )


def _fail_own_running(study: optuna.Study, storage: optuna.storages.BaseStorage, *, worker: str, name: str) -> None:
    """Trials this worker left RUNNING died with it (the run-folder lock proves no live process owns them)."""
    stale = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get("worker") == worker
    ]
    if not stale:
        return
    study_id = storage.get_study_id_from_name(name)
    for t in stale:
        storage.set_trial_state_values(
            storage.get_trial_id_from_study_id_trial_number(study_id, t.number), state=TrialState.FAIL
        )
    log.warning("marked %d trial(s) this worker left running as FAIL: %s", len(stale), [t.number for t in stale])


def _enqueue(study: optuna.Study, *, env: PruningEnv, policies: Sequence[Policy | Mapping[str, float]]) -> None:
    lo, hi = env.config.min_ratio, env.config.max_ratio
    for item in policies:
        policy = item if isinstance(item, Policy) else Policy(ratios=dict(item))
        policy.validate(env.group_names)
        params: dict[str, Any] = {g: float(min(max(policy.ratio(g), lo), hi)) for g in env.group_names}
        params.update({f"remove:{block}": block in policy.removed for block in env.blocks.values()})
        study.enqueue_trial(params, user_attrs={"enqueued": True}, skip_if_exists=True)


def _plots(
    study: optuna.Study, *, recorder: TrialRecorder, run_dir: Path, config: StudyConfig, env: PruningEnv
) -> tuple[Path, ...]:
    written = []
    if recorder.records:
        written.append(
            plot_trials(
                records=recorder.records, out=run_dir / TRIALS_FILE, title=f"Optuna {config.sampler}: {run_dir.name}"
            )
        )
    cost_key = study.user_attrs.get(_ATTR_COST, cost_key_for(config, env))
    points = study_points(study, cost_key=cost_key)
    budget = {
        ("macs", "macs_ratio"): env.config.target_ratio,
        ("params", "params_ratio"): env.config.target_ratio,
        ("latency", "latency_ms"): env.target_ms,
    }.get((env.config.target, cost_key))
    if points:
        written.append(
            plot_pareto(
                points=points,
                cost_key=cost_key,
                out=run_dir / PARETO_FILE,
                title=f"study '{config.study_name}': {len(points)} complete trials",
                budget=budget,
            )
        )
    return tuple(written)


def _summary(
    study: optuna.Study,
    *,
    recorder: TrialRecorder,
    run_dir: Path,
    config: StudyConfig,
    spec: StorageSpec,
    worker: str,
    start: int,
    env: PruningEnv,
    plots: tuple[Path, ...],
) -> StudySummary:
    records = recorder.records
    best = recorder.best
    cost_key = study.user_attrs.get(_ATTR_COST, cost_key_for(config, env))
    front = pareto_front(study_points(study, cost_key=cost_key))
    return StudySummary(
        run_dir=run_dir,
        study_name=config.study_name,
        storage=spec.display,
        worker=worker,
        sampler=config.sampler,
        objectives=config.objectives,
        trials=len(records),
        complete=sum(r.get("trial_state") == "COMPLETE" for r in records),
        pruned=sum(r.get("trial_state") == "PRUNED" for r in records),
        resumed_from=start,
        study_trials=len(study.get_trials(deepcopy=False, states=FINISHED)),
        best_trial=None if best is None else int(best["episode"]),
        best_reward=None if best is None else float(best["reward"]),
        best_accuracy=None if best is None or best.get("accuracy") is None else float(best["accuracy"]),
        best_policy=None if best is None else dict(best["policy"]),
        cost_key=cost_key,
        pareto=tuple(p.number for p in front),
        plots=plots,
    )


def summary_dict(summary: StudySummary) -> dict[str, Any]:
    """JSON-safe form of a :class:`StudySummary`."""
    out = asdict(summary)
    out["run_dir"] = str(summary.run_dir)
    out["plots"] = [str(p) for p in summary.plots]
    out["pareto"] = list(summary.pareto)
    return out
