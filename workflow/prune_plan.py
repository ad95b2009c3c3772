"""Per-group pruning ratios from a sensitivity analysis: ``prunegym prune --ana DIR --threshold T | --rate R``.

**Loss envelope.** For group g with analysed ratios r_1 < … < r_m and accuracy drops d_i (points, baseline −
pruned), the envelope is ``e_g(0) = 0`` and ``e_g(r_i) = max(0, d_1, …, d_i)``: a ratio is only as safe as every
smaller one. This makes the curve monotone and robust to evaluation noise (a lucky cell at 60% after a bad one
at 50% does not make 60% look safe). The curve ends before the group's first not-applicable ratio (one that
would leave no channel).

**Threshold rule** (``--threshold T``, as vai_p_darknet's threshold): every group gets its largest *analysed*
ratio whose envelope loss is ≤ T points (0 if none). Only measured ratios are used.

**Rate rule** (``--rate R``, as vai_p's rate). One common loss threshold T for all groups, found by bisection:
the smallest T such that giving every group its largest ratio with envelope loss ≤ T meets the MAC budget
``predicted MACs ≤ (1 − R) · MACs`` (exact, from :meth:`CostTable.predict` with ``round_to``). Between analysed
ratios the envelope is interpolated linearly, with a tie-breaking slope of 1e-3 points per unit ratio on flat
stretches, so every group's ratio moves continuously with T and the budget is met to within about a channel
instead of overshooting by a grid step. Sensitive groups are therefore pruned less and insensitive ones more;
no ratio exceeds the largest one analysed. If even every group at its largest analysed ratio misses the budget,
the rate is unreachable and the error says the largest reachable rate. Ratios are snapped to exact channel
fractions ``1 − K/n`` so the saved policy reproduces the predicted channel counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from prunegym.core.policy import Policy, PolicyError
from prunegym.core.pruning import CostTable, kept_channels
from prunegym.workflow.sensitivity import Sensitivity

log = logging.getLogger(__name__)

TIE_SLOPE = 1e-3  # points of loss per unit ratio added on flat stretches of the envelope (rate rule only)


@dataclass(frozen=True)
class Plan:
    """Per-group ratios, the loss threshold that produced them, and their predicted cost."""

    ratios: Mapping[str, float]
    threshold: float
    macs: int
    params: int
    base_macs: int
    base_params: int
    predicted_loss: Mapping[str, float]  # envelope loss (points) at each group's ratio
    rule: str  # "threshold" | "rate"

    @property
    def macs_removed(self) -> float:
        """Fraction of the original MACs the plan removes."""
        return 1.0 - self.macs / self.base_macs

    def policy(self, **meta: Any) -> Policy:
        """The plan as a :class:`Policy` (groups at ratio 0 left out).

        Args:
            **meta: other Policy fields (``source`` defaults to ``"ana"``; ``metrics`` are merged with the plan's
                threshold and predicted ratios).

        Returns:
            The policy.
        """
        metrics = {
            "ana_threshold": self.threshold,
            "predicted_macs_ratio": self.macs / self.base_macs,
            "predicted_params_ratio": self.params / self.base_params,
        }
        meta = {"source": "ana", **meta, "metrics": {**metrics, **dict(meta.get("metrics") or {})}}
        return Policy(ratios={g: r for g, r in self.ratios.items() if r > 0}, **meta)


def envelope(sens: Sensitivity, group: str) -> tuple[list[float], list[float]]:
    """The group's loss envelope (see the module docstring).

    Args:
        sens: the sensitivity analysis.
        group: the group name.

    Returns:
        ``(ratios, losses)``, starting at ``(0, 0)`` and ending before the first not-applicable ratio.
    """
    xs, ys, worst = [0.0], [0.0], 0.0
    for i, r in enumerate(sens.ratios):
        drop = sens.drop(group, i)
        if drop is None:
            break
        worst = max(worst, drop)
        xs.append(r)
        ys.append(worst)
    return xs, ys


def _ratio_at(xs: list[float], ys: list[float], threshold: float, *, interpolate: bool) -> float:
    """The largest ratio whose envelope loss is ≤ ``threshold``."""
    if not interpolate:
        return max(x for x, y in zip(xs, ys, strict=True) if y <= threshold)
    ys = [y + TIE_SLOPE * x for x, y in zip(xs, ys, strict=True)]  # strictly increasing
    if threshold >= ys[-1]:
        return xs[-1]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False):
        if y0 <= threshold < y1:
            return x0 + (threshold - y0) / (y1 - y0) * (x1 - x0)
    return 0.0  # threshold below 0


def _check_groups(sens: Sensitivity, table: CostTable) -> None:
    """Every analysed group must be a group of the model (close matches suggested); missing ones are kept whole."""
    try:
        Policy(ratios=dict.fromkeys(sens.groups, 0.0)).validate(table.channels)
    except PolicyError as exc:
        raise PolicyError(f"the ana result (model {sens.model!r}) does not fit this model: {exc}") from exc
    missing = [g for g in table.channels if g not in sens.groups]
    if missing:
        log.warning("ana result has no data for %d groups (%s, ...); they are not pruned", len(missing), missing[0])


def _snap(ratios: Mapping[str, float], table: CostTable, round_to: int) -> dict[str, float]:
    """Each ratio snapped to the exact channel fraction ``1 - K/n`` of the count it keeps."""
    out = {}
    for g, r in ratios.items():
        n = table.channels[g]
        k = kept_channels(n, r, round_to, name=g)
        out[g] = 1.0 - k / n if k < n else 0.0
    return out


def _plan(sens: Sensitivity, table: CostTable, threshold: float, *, round_to: int, rule: str) -> Plan:
    """The plan of one loss ``threshold`` (``rule`` "rate" interpolates the envelope, "threshold" does not)."""
    curves = {g: envelope(sens, g) for g in sens.groups if g in table.channels}
    raw = {g: _ratio_at(*c, threshold, interpolate=rule == "rate") for g, c in curves.items()}
    ratios = _snap(raw, table, round_to)
    macs, params = table.predict(ratios, round_to=round_to)
    loss = {}
    for g, (xs, ys) in curves.items():
        # the envelope at the snapped ratio, interpolated (the analysed points are exact)
        r = ratios[g]
        j = max(i for i, x in enumerate(xs) if x <= r + 1e-12)
        loss[g] = ys[j] if j + 1 == len(xs) else ys[j] + (r - xs[j]) / (xs[j + 1] - xs[j]) * (ys[j + 1] - ys[j])
    return Plan(
        ratios=ratios,
        threshold=threshold,
        macs=macs,
        params=params,
        base_macs=table.macs,
        base_params=table.params,
        predicted_loss=loss,
        rule=rule,
    )


def plan_for_threshold(sens: Sensitivity, table: CostTable, *, threshold: float, round_to: int = 1) -> Plan:
    """Each group's largest analysed ratio whose envelope loss is ≤ ``threshold`` points.

    Args:
        sens: the sensitivity analysis.
        table: the model's cost table.
        threshold: the largest loss (accuracy points) allowed per group.
        round_to: round kept channel counts to this multiple.

    Returns:
        The plan.

    Raises:
        PolicyError: a negative or non-finite threshold, or an analysis of another model.
    """
    if not (math.isfinite(threshold) and threshold >= 0):
        raise PolicyError(f"threshold {threshold} must be a number ≥ 0 (accuracy points)")
    _check_groups(sens, table)
    return _plan(sens, table, threshold, round_to=round_to, rule="threshold")


def plan_for_rate(sens: Sensitivity, table: CostTable, *, rate: float, round_to: int = 1) -> Plan:
    """The smallest common loss threshold whose per-group ratios remove at least ``rate`` of the MACs.

    Args:
        sens: the sensitivity analysis.
        table: the model's cost table.
        rate: the fraction of the MACs to remove.
        round_to: round kept channel counts to this multiple.

    Returns:
        The plan (its ``threshold`` is the common loss threshold found).

    Raises:
        PolicyError: a rate outside (0, 1), a rate the analysed ratios cannot reach, or an analysis of another
            model.
    """
    if not (math.isfinite(rate) and 0.0 < rate < 1.0):
        raise PolicyError(f"rate {rate} is outside (0, 1); use the fraction of MACs to remove, e.g. 0.5")
    _check_groups(sens, table)
    target = (1.0 - rate) * table.macs
    hi = (
        max(
            [TIE_SLOPE * 2]
            + [
                y + TIE_SLOPE * x
                for g in sens.groups
                if g in table.channels
                for x, y in zip(*envelope(sens, g), strict=True)
            ]
        )
        + 1e-9
    )
    best = _plan(sens, table, hi, round_to=round_to, rule="rate")
    if best.macs > target:
        raise PolicyError(
            f"rate {rate} is unreachable from the ana result: at most {best.macs_removed:.4f} of the MACs can be "
            f"removed with the analysed ratios (up to {max(sens.ratios):g} per group); lower --rate or rerun ana "
            "with larger --ratios"
        )
    lo = 0.0
    if _plan(sens, table, lo, round_to=round_to, rule="rate").macs <= target:
        hi = lo
    else:
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if _plan(sens, table, mid, round_to=round_to, rule="rate").macs <= target else (mid, hi)
    plan = _plan(sens, table, hi, round_to=round_to, rule="rate")
    log.info(
        "ana plan: threshold %.4f points → %.2f%% of the MACs removed (target %.2f%%)",
        hi,
        100 * plan.macs_removed,
        100 * rate,
    )
    return replace(plan, threshold=hi)
