"""One Optuna trial = one episode of the agent's environment, with the ratios the trial suggests."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import optuna
from optuna.trial import Trial

from prunegym.core.errors import UserError
from prunegym.core.policy import Policy
from prunegym.env.pruning_env import PruningEnv
from prunegym.search.optuna_config import OBJECTIVES, StudyConfig, make_pruner
from prunegym.search.optuna_records import BUDGET

__all__ = ["TrialObjective"]


def _resource_ratio(info: Mapping[str, Any], target: str) -> float | None:
    key = {"macs": "macs_ratio", "params": "params_ratio", "latency": "latency_ratio"}[target]
    value = info.get(key)
    return None if value is None else float(value)


class _ReportingEvaluator:
    """Stands in for ``env.evaluator`` during one trial: forwards everything, passes ``report`` to ``evaluate``
    (so the finetune's intermediate accuracies reach the trial) and remembers the ratios it was asked to score."""

    def __init__(self, inner: Any, report: Callable[[int, float], None] | None) -> None:
        self._inner = inner
        self._report = report
        self.ratios: dict[str, float] | None = None
        self.removed: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def evaluate(
        self, ratios: Mapping[str, float], *, report: Any = None, keep_model: bool = False, removed: Any = ()
    ) -> Any:
        self.ratios = {k: float(v) for k, v in ratios.items()}
        self.removed = tuple(removed)
        return self._inner.evaluate(ratios, report=self._report or report, keep_model=keep_model, removed=removed)


class TrialObjective:
    """One trial = one env episode with the suggested ratios; returns the configured objective value(s)."""

    def __init__(self, *, env: PruningEnv, config: StudyConfig, worker: str, template: Policy) -> None:
        self.env = env
        self.config = config
        self.worker = worker
        self.template = template
        self.objectives = OBJECTIVES[config.objectives]
        self.prune = not isinstance(make_pruner(config, env), optuna.pruners.NopPruner)

    def _reporter(self, trial: Trial) -> Callable[[int, float], None]:
        def report(step: int, accuracy: float) -> None:
            trial.report(float(accuracy), step)
            if trial.should_prune():
                trial.set_user_attr("pruned_accuracy", float(accuracy))
                raise optuna.TrialPruned(f"val accuracy {accuracy:.2f}% at finetune step {step} is below the median")

        return report

    def __call__(self, trial: Trial) -> float | tuple[float, ...]:
        env, cfg = self.env, self.env.config
        trial.set_user_attr("worker", self.worker)
        env.reset()
        inner = env.evaluator
        proxy = _ReportingEvaluator(inner, self._reporter(trial) if self.prune else None)
        env.evaluator = proxy  # type: ignore[assignment]
        info: dict[str, Any] = {}
        try:
            for name in env.group_names:
                ratio = trial.suggest_float(name, cfg.min_ratio, cfg.max_ratio)
                remove = name in env.blocks and trial.suggest_categorical(f"remove:{env.blocks[name]}", (False, True))
                action = env.action_of(ratio, remove=bool(remove), group=name)
                _, _, terminated, _, info = env.step(np.array([action], dtype=np.float64))
        except optuna.TrialPruned:
            policy = replace(self.template, ratios=proxy.ratios or {}, removed=proxy.removed, trial=trial.number)
            trial.set_user_attr("policy", policy.to_dict())
            raise
        finally:
            env.evaluator = inner
        if not terminated:
            raise RuntimeError(f"the env did not terminate after {env.num_groups} groups")
        for key in ("reward", "accuracy", "top5", "macs_ratio", "params_ratio", "latency_ms", "latency_ratio"):
            value = info.get(key)
            trial.set_user_attr(key, None if value is None else float(value))
        trial.set_user_attr("seconds", {k: float(v) for k, v in (info.get("seconds") or {}).items()})
        trial.set_user_attr("cached", bool(info.get("cached", False)))
        policy = replace(env.policy_from_info(info, source="optuna"), model=self.template.model, trial=trial.number)
        trial.set_user_attr("policy", policy.to_dict())
        resource = _resource_ratio(info, cfg.target)
        if resource is not None:
            # the action wall allows 1e-9 of slack; keep a wall-clipped policy feasible
            trial.set_constraint(BUDGET, resource - cfg.target_ratio - 1e-9)
        values = []
        for key, _ in self.objectives:
            value = info.get(key)
            if value is None or not math.isfinite(float(value)):
                raise UserError(f"objective '{key}' is {value} for trial {trial.number}; check --latency")
            values.append(float(value))
        return values[0] if len(values) == 1 else tuple(values)
