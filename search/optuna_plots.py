"""Figures of an Optuna study (PNG through matplotlib's Agg canvas; no global backend switch, no display).

- :func:`pareto_front` / :func:`plot_pareto`: accuracy vs latency or MACs of every complete trial, the
  non-dominated front (higher accuracy, lower cost, within the budget) highlighted;
- :func:`plot_trials`: reward per trial and the best so far, pruned trials marked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from prunegym.core.plots import save_png

__all__ = ["PARETO_FILE", "TRIALS_FILE", "ParetoPoint", "pareto_front", "plot_pareto", "plot_trials"]

PARETO_FILE = "pareto.png"
TRIALS_FILE = "search_curve.png"
COST_LABELS = {
    "latency_ms": "latency (ms)",
    "macs_ratio": "MACs kept (fraction of the unpruned model)",
    "params_ratio": "parameters kept (fraction)",
}


@dataclass(frozen=True)
class ParetoPoint:
    """One complete trial in the accuracy/cost plane."""

    number: int
    accuracy: float
    cost: float
    feasible: bool = True


def pareto_front(points: Sequence[ParetoPoint]) -> list[ParetoPoint]:
    """The feasible points no other feasible point dominates (accuracy ≥, cost ≤, one strictly), by cost.

    Points with equal accuracy and cost are all kept (as Optuna's ``best_trials`` does).
    """
    pts = sorted(
        (p for p in points if p.feasible and math.isfinite(p.accuracy) and math.isfinite(p.cost)),
        key=lambda p: (p.cost, -p.accuracy, p.number),
    )
    front: list[ParetoPoint] = []
    best_so_far = -math.inf  # best accuracy at a strictly lower cost
    i = 0
    while i < len(pts):
        j = i
        while j < len(pts) and pts[j].cost == pts[i].cost:
            j += 1
        top = pts[i].accuracy  # the group is sorted by accuracy, highest first
        if top > best_so_far:
            front.extend(p for p in pts[i:j] if p.accuracy == top)
            best_so_far = top
        i = j
    return front


def _label_front(ax: Any, front: Sequence[ParetoPoint], points: Sequence[ParetoPoint]) -> None:
    """Trial numbers on the front's points, skipping a point too close to one already labelled (in axes units)
    and alternating above/below, so that labels never pile up."""
    costs = [p.cost for p in points] or [0.0]
    accs = [p.accuracy for p in points] or [0.0]
    span_x = (max(costs) - min(costs)) or 1.0
    span_y = (max(accs) - min(accs)) or 1.0
    placed: list[tuple[float, float]] = []
    for k, p in enumerate(front):
        at = ((p.cost - min(costs)) / span_x, (p.accuracy - min(accs)) / span_y)
        if any(abs(at[0] - q[0]) < 0.06 and abs(at[1] - q[1]) < 0.06 for q in placed):
            continue
        placed.append(at)
        ax.annotate(
            f"#{p.number}",
            (p.cost, p.accuracy),
            textcoords="offset points",
            xytext=(4, 5 if k % 2 == 0 else -10),
            fontsize="x-small",
            color="C3",
        )


def plot_pareto(
    *, points: Sequence[ParetoPoint], cost_key: str, out: Path, title: str = "", budget: float | None = None
) -> Path:
    """Scatter of every trial, infeasible ones crossed, the front joined as a step line and labelled; ``budget``
    (in the cost's units) is drawn as a dashed vertical line."""
    fig = Figure(figsize=(7.0, 4.5), dpi=120)
    ax = fig.add_subplot()
    ok = [p for p in points if p.feasible]
    bad = [p for p in points if not p.feasible]
    if ok:
        ax.scatter([p.cost for p in ok], [p.accuracy for p in ok], s=12, color="0.6", alpha=0.7, label="trial")
    if bad:
        ax.scatter(
            [p.cost for p in bad],
            [p.accuracy for p in bad],
            s=14,
            marker="x",
            color="C1",
            alpha=0.7,
            label="over budget",
        )
    front = pareto_front(points)
    if front:
        ax.step([p.cost for p in front], [p.accuracy for p in front], where="post", color="C3", lw=1.2)
        ax.scatter(
            [p.cost for p in front],
            [p.accuracy for p in front],
            s=28,
            color="C3",
            zorder=3,
            label=f"Pareto front ({len(front)})",
        )
        _label_front(ax, front, points)
    if budget is not None:
        ax.axvline(budget, color="0.3", ls="--", lw=1.0, label=f"budget ({budget:.3g})")
    ax.set_xlabel(COST_LABELS.get(cost_key, cost_key))
    ax.set_ylabel("val top-1 accuracy (%)")
    ax.set_title(title or f"accuracy vs {COST_LABELS.get(cost_key, cost_key)}")
    ax.grid(alpha=0.3)
    if points:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return save_png(fig, out)


def plot_trials(*, records: Sequence[Mapping[str, Any]], out: Path, title: str = "") -> Path:
    """Reward per trial (dots), best feasible reward so far (line), pruned trials as ticks on the x axis."""
    recs = sorted(records, key=lambda r: int(r["episode"]))
    numbers = np.array([int(r["episode"]) for r in recs], dtype=np.int64)
    rewards = np.array([np.nan if r.get("reward") is None else float(r["reward"]) for r in recs], dtype=np.float64)
    ok = np.array([r.get("constraint") is None or r["constraint"] <= 0.0 for r in recs], dtype=bool)
    masked = np.where(np.isfinite(rewards) & ok, rewards, -np.inf)
    best = np.maximum.accumulate(masked) if masked.size else masked
    fig = Figure(figsize=(7.0, 4.0), dpi=120)
    ax = fig.add_subplot()
    if recs:
        ax.scatter(numbers, rewards, s=8, alpha=0.6, label="trial reward")
        ax.plot(numbers, np.where(np.isfinite(best), best, np.nan), color="C3", label="best so far")
        pruned = numbers[np.array([r.get("trial_state") == "PRUNED" for r in recs], dtype=bool)]
        if pruned.size:
            ax.plot(
                pruned,
                np.zeros_like(pruned, dtype=np.float64),
                "|",
                color="0.4",
                transform=ax.get_xaxis_transform(),
                ms=10,
                label=f"pruned ({pruned.size})",
            )
        ax.legend(loc="best", fontsize="small")
    ax.set_xlabel("trial")
    ax.set_ylabel("reward")
    ax.set_title(title or "Optuna search")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, out)
