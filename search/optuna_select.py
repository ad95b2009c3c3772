"""Pick one trial of a finished study: the best feasible one, or the Pareto point a user constraint selects.

Only COMPLETE trials within the budget (``constraints`` ≤ 0) are candidates. Rules:

- no constraint: the best objective value (single objective); a multi-objective study needs a constraint;
- ``min_accuracy`` alone: the cheapest trial (lowest latency when measured, else MACs) that reaches it;
- ``max_latency`` / ``max_macs`` (with or without ``min_accuracy``): the trial with the best objective (single) or
  the highest accuracy (multi-objective) among those that meet them; ties go to the cheaper trial.

The chosen point of a multi-objective study is always on its Pareto front.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from prunegym.core.errors import UserError

__all__ = ["Selection", "describe", "select_trial"]


@dataclass(frozen=True)
class Selection:
    trial: FrozenTrial
    reason: str


def _attr(t: FrozenTrial, key: str) -> float | None:
    v = t.user_attrs.get(key)
    return None if v is None else float(v)


def describe(t: FrozenTrial) -> str:
    """``trial 12 (accuracy 91.20 %, latency 0.512 ms, MACs 0.498)`` with the figures the trial has."""
    parts = []
    for key, fmt in (
        ("accuracy", "accuracy {:.2f} %"),
        ("latency_ms", "latency {:.3f} ms"),
        ("macs_ratio", "MACs {:.3f}"),
    ):
        v = _attr(t, key)
        if v is not None:
            parts.append(fmt.format(v))
    return f"trial {t.number} ({', '.join(parts)})"


def _candidates(study: optuna.Study) -> list[FrozenTrial]:
    out = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "policy" in t.user_attrs and all(c <= 0.0 for c in t.constraints.values())
    ]
    if not out:
        raise UserError(f"study '{study.study_name}' has no complete trial within the budget yet; run more trials")
    return out


def _cap(
    trials: list[FrozenTrial], *, key: str, limit: float, flag: str, unit: str, label: str, fix: str
) -> list[FrozenTrial]:
    have = [t for t in trials if _attr(t, key) is not None]
    if not have:
        raise UserError(f"the study has no {label} figures (it ran without them); use {fix}")
    kept = [t for t in have if _attr(t, key) <= limit]  # type: ignore[operator]
    if not kept:
        best = min(have, key=lambda t: (_attr(t, key), -(_attr(t, "accuracy") or 0.0)))
        raise UserError(
            f"no trial meets {flag} {limit:g}{unit}; the best available is {_attr(best, key):.4g}{unit}: "
            f"{describe(best)}; raise {flag}"
        )
    return kept


def select_trial(
    study: optuna.Study,
    *,
    max_latency: float | None = None,
    min_accuracy: float | None = None,
    max_macs: float | None = None,
) -> Selection:
    """The trial to export under the rules of the module doc; a one-line :class:`UserError` names the best
    available point when no trial meets a constraint."""
    trials = _candidates(study)
    multi = len(study.directions) > 1
    has_latency = all(_attr(t, "latency_ms") is not None for t in trials)
    cost_key = "latency_ms" if has_latency else "macs_ratio"
    if max_latency is not None:
        trials = _cap(
            trials,
            key="latency_ms",
            limit=max_latency,
            flag="--max-latency",
            unit=" ms",
            label="latency",
            fix="--max-macs or --min-accuracy",
        )
    if max_macs is not None:
        trials = _cap(
            trials,
            key="macs_ratio",
            limit=max_macs,
            flag="--max-macs",
            unit="",
            label="MACs",
            fix="--max-latency or --min-accuracy",
        )
    if min_accuracy is not None:
        have = trials
        trials = [t for t in have if (_attr(t, "accuracy") or -1.0) >= min_accuracy]
        if not trials:
            best = max(have, key=lambda t: (_attr(t, "accuracy") or -1.0, -(_attr(t, cost_key) or 0.0)))
            within = " within the other limits" if max_latency is not None or max_macs is not None else ""
            raise UserError(
                f"no trial reaches --min-accuracy {min_accuracy:g} %{within}; the most accurate is {describe(best)}; "
                "lower --min-accuracy"
            )
    constrained = max_latency is not None or max_macs is not None
    if min_accuracy is not None and not constrained:
        pick = min(trials, key=lambda t: (_attr(t, cost_key), -(_attr(t, "accuracy") or 0.0), t.number))
        return Selection(pick, f"lowest {cost_key} with accuracy ≥ {min_accuracy:g} %")
    if multi:
        if not constrained:
            lo = min(trials, key=lambda t: _attr(t, cost_key) or 0.0)
            hi = max(trials, key=lambda t: _attr(t, "accuracy") or 0.0)
            raise UserError(
                f"study '{study.study_name}' is multi-objective ({len(study.best_trials)} Pareto points, from "
                f"{describe(lo)} to {describe(hi)}); choose one with --max-latency MS, --max-macs R or --min-accuracy PCT"
            )
        pick = max(trials, key=lambda t: (_attr(t, "accuracy") or -1.0, -(_attr(t, cost_key) or 0.0), -t.number))
        return Selection(pick, "highest accuracy within the limits")
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    pick = max(trials, key=lambda t: (sign * float(t.value), -(_attr(t, cost_key) or 0.0), -t.number))  # type: ignore[arg-type]
    return Selection(pick, "best objective within the limits" if constrained else "best feasible objective")
