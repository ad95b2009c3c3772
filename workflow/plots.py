"""Figures of the DeePhi workflow (PNG via matplotlib's Agg canvas; no global backend switch, no display needed).

- :func:`sensitivity_heatmap`: groups × ratios, accuracy drop in points (``prunegym ana``);
- :func:`rounds_plot`: operations, weights and top-1 over the rounds of ``prunegym iterate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from prunegym.core.plots import save_png

if TYPE_CHECKING:
    from prunegym.workflow.sensitivity import Sensitivity

__all__ = ["rounds_plot", "sensitivity_heatmap"]


def sensitivity_heatmap(result: Sensitivity, out: Path) -> Path:
    """Heatmap of the accuracy drop (baseline − pruned, points) of each group (rows) at each ratio (columns).

    Cells where the ratio is not applicable are grey.

    Args:
        result: the sensitivity analysis.
        out: the PNG path.

    Returns:
        The path written.
    """
    drops = np.array(
        [
            [np.nan if result.drop(g, i) is None else result.drop(g, i) for i in range(len(result.ratios))]
            for g in result.groups
        ],
        dtype=float,
    ).reshape(len(result.groups), len(result.ratios))
    height = 1.5 + 0.28 * len(result.groups)
    fig = Figure(figsize=(max(5.0, 1.6 + 0.75 * len(result.ratios)), height), dpi=120)
    ax = fig.add_subplot()
    finite = drops[np.isfinite(drops)]
    vmax = max(1.0, float(finite.max())) if finite.size else 1.0
    cmap = colormaps["Reds"].with_extremes(bad="#cccccc")
    im = ax.imshow(np.ma.masked_invalid(np.clip(drops, 0.0, None)), aspect="auto", cmap=cmap, vmin=0.0, vmax=vmax)
    ax.set_xticks(range(len(result.ratios)), [f"-{100 * r:g}%" for r in result.ratios])
    ax.set_yticks(range(len(result.groups)), list(result.groups), fontsize=7)
    if drops.size <= 400:
        for (i, j), v in np.ndenumerate(drops):
            if np.isfinite(v):
                ax.text(
                    j, i, f"{v:.1f}", ha="center", va="center", fontsize=6, color="white" if v > 0.6 * vmax else "black"
                )
    ax.set_xlabel("channels removed from the group")
    ax.set_title(f"{result.model}\ntop-1 drop (points) vs baseline {result.baseline:.2f}%", fontsize=9, wrap=True)
    fig.colorbar(im, ax=ax, label="accuracy drop (points)")
    fig.tight_layout()
    return save_png(fig, out)


def rounds_plot(rounds: Sequence[Mapping[str, Any]], out: Path, *, baseline_accuracy: float | None = None) -> Path:
    """Remaining operations and weights (% of the original, left axis) and val top-1 (right axis) per round.

    Round 0 is the unpruned model.

    Args:
        rounds: :meth:`~prunegym.workflow.iterate.RoundResult.to_dict` records.
        out: the PNG path.
        baseline_accuracy: val top-1 of the unpruned model (None: not plotted).

    Returns:
        The path written.
    """
    x = [0] + [int(r["round"]) for r in rounds]
    ops = [100.0] + [100.0 * (1 - float(r["ops_removed"])) for r in rounds]
    weights = [100.0] + [100.0 * (1 - float(r["params_removed"])) for r in rounds]
    fig = Figure(figsize=(7.0, 4.0), dpi=120)
    ax = fig.add_subplot()
    ax.plot(x, ops, "o-", color="tab:blue", label="operations (% of original)")
    ax.plot(x, weights, "s-", color="tab:green", label="weights (% of original)")
    ax.set_xlabel("round")
    ax.set_ylabel("% of the original model")
    ax.set_xticks(x)
    ax.set_ylim(0, 105)
    ax2 = ax.twinx()
    acc_x = x if baseline_accuracy is not None else x[1:]
    acc = ([baseline_accuracy] if baseline_accuracy is not None else []) + [float(r["accuracy"]) for r in rounds]
    ax2.plot(acc_x, acc, "^-", color="tab:red", label="val top-1 (after finetune)")
    ax2.set_ylabel("val top-1 %")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="lower left", fontsize=8)
    ax.set_title("iterative pruning: prune → finetune per round", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, out)
