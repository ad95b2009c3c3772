"""Settings of an Optuna study, and the sampler and pruner they name."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna

from prunegym.core.errors import ConfigError

if TYPE_CHECKING:
    from prunegym.env.pruning_env import PruningEnv

__all__ = ["OBJECTIVES", "PRUNERS", "SAMPLERS", "StudyConfig", "make_pruner", "make_sampler", "sampler_seed"]

SAMPLERS = ("tpe", "motpe", "nsga2", "nsga3", "random")
PRUNERS = ("median", "none")
# objective name -> ((info key, direction), ...)
OBJECTIVES: dict[str, tuple[tuple[str, str], ...]] = {
    "reward": (("reward", "maximize"),),
    "accuracy,latency": (("accuracy", "maximize"), ("latency_ms", "minimize")),
    "accuracy,macs": (("accuracy", "maximize"), ("macs_ratio", "minimize")),
    "accuracy,params": (("accuracy", "maximize"), ("params_ratio", "minimize")),
}


@dataclass(frozen=True)
class StudyConfig:
    """Settings of an Optuna study (every field is a ``prunegym optuna run`` flag).

    Args:
        sampler: ``tpe`` (default; multi-objective TPE on a multi-objective study), ``motpe`` (TPE, multi-objective
            only), ``nsga2``, ``nsga3`` or ``random``.
        objectives: ``reward`` or ``accuracy,latency`` / ``accuracy,macs`` / ``accuracy,params``.
        n_trials: finished trials (complete or pruned) this worker runs in total, counting those of earlier runs.
        seed: sampler seed (workers and resumed runs derive their own from it)
        storage: leave out for study.db in the run folder; 'journal'; FILE.log; or a database URL such as
            postgresql://user:${PGPASSWORD}@host/db shared by many workers.
        study_name: the study's name in the storage (same name = same study; alias --study).
        pruner: ``median`` (Optuna's MedianPruner on the finetune's intermediate accuracies) or ``none``.
        n_startup_trials: TPE's random trials before it models the search space.
        multivariate: TPE models the groups' ratios jointly (they interact through the budget)
        population_size: NSGA-II/III generation size.
        pruner_startup_trials: trials the MedianPruner lets finish before it prunes.
        pruner_warmup_steps: finetune steps before the MedianPruner may prune a trial.
        heartbeat: seconds between a worker's heartbeats on a shared database (0 = off); a trial silent for 3× that is
            marked FAIL.
        tensorboard: write TensorBoard scalars under ``run_dir/tensorboard/optuna``.
    """

    sampler: str = "tpe"
    objectives: str = "reward"
    n_trials: int = 100
    seed: int = 0
    storage: str | None = None
    study_name: str = "prunegym"
    pruner: str = "median"
    n_startup_trials: int = 10
    multivariate: bool = True
    population_size: int = 50
    pruner_startup_trials: int = 5
    pruner_warmup_steps: int = 0
    heartbeat: int = 60
    tensorboard: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", self.objectives.replace(" ", "").lower())
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler '{self.sampler}'; choose one of {', '.join(SAMPLERS)}")
        if self.objectives not in OBJECTIVES:
            raise ConfigError(f"unknown objectives '{self.objectives}'; choose one of {', '.join(OBJECTIVES)}")
        if self.sampler == "motpe" and not self.multi_objective:
            raise ConfigError("sampler motpe is multi-objective TPE; use --sampler tpe with --objectives reward")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"unknown pruner '{self.pruner}'; choose one of {', '.join(PRUNERS)}")
        if self.n_trials < 1:
            raise ConfigError(f"n_trials is {self.n_trials}; use at least 1")
        if not self.study_name:
            raise ConfigError("study_name is empty; pass --study NAME")
        for name in ("n_startup_trials", "pruner_startup_trials", "pruner_warmup_steps", "heartbeat"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} is {getattr(self, name)}; use 0 or more")
        if self.population_size < 2:
            raise ConfigError(f"population_size is {self.population_size}; use at least 2")

    @property
    def multi_objective(self) -> bool:
        return len(OBJECTIVES[self.objectives]) > 1

    @property
    def directions(self) -> list[str]:
        return [d for _, d in OBJECTIVES[self.objectives]]


def make_sampler(config: StudyConfig, *, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler named by ``config.sampler``, seeded with ``seed``."""
    if config.sampler in ("tpe", "motpe"):
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=config.n_startup_trials, multivariate=config.multivariate, constant_liar=True
        )
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=config.population_size)
    if config.sampler == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=seed, population_size=config.population_size)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(config: StudyConfig, env: PruningEnv) -> optuna.pruners.BasePruner:
    if config.pruner == "none" or config.multi_objective or env.evaluator.config.finetune_steps == 0:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=config.pruner_startup_trials, n_warmup_steps=config.pruner_warmup_steps
    )


def sampler_seed(seed: int, *, worker: str, existing: int, shared: bool) -> int:
    """``seed`` for a fresh private study (reproducible); otherwise a seed derived from it, the trials already in
    the study and (on shared storage) the worker, so a resumed run or a second worker never replays the same draws."""
    if existing == 0 and not shared:
        return seed
    key = f"{seed}:{existing}:{worker if shared else ''}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")
