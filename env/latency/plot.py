"""The check plot: predicted vs measured latency of the checked policies, one panel per clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prunegym.core.plots import Figure, save_png
from prunegym.env.latency.check import LatencyCheck

__all__ = ["plot_check"]


def plot_check(check: LatencyCheck, path: Path | str, *, title: str = "") -> Path:
    """Scatter of predicted vs measured latency (one panel per clock) with the y = x line, written as PNG.

    Horizontal bars: ±1 standard error of each measured median (std of its per-round medians / √rounds).

    Args:
        check: the check to draw.
        path: the PNG file (written atomically).
        title: each panel's title; defaults to "latency table check".

    Returns:
        The path written.
    """
    clocks = list(check.measured_ms)
    fig = Figure(figsize=(5.2 * len(clocks), 5.0))
    axes = fig.subplots(1, len(clocks), squeeze=False)
    p = np.array(check.predicted_ms)
    for ax, clock in zip(axes[0], clocks, strict=True):
        m = np.array(check.measured_ms[clock])
        rounds = np.array(check.round_ms[clock])
        se = np.std(rounds, axis=1, ddof=1) / np.sqrt(rounds.shape[1]) if rounds.shape[1] > 1 else np.zeros(len(m))
        lo, hi = float(min(m.min(), p.min())) * 0.96, float(max(m.max(), p.max())) * 1.04
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, ls="--", label="y = x")
        ax.errorbar(
            m,
            p,
            xerr=se,
            fmt="o",
            ms=4,
            alpha=0.8,
            elinewidth=0.8,
            label="policy (bar: ±1 s.e. of the measured median)",
        )
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        what = "thread CPU time" if clock == "cpu" else "wall clock"
        primary = " (what the table predicts)" if clock == check.clock else ""
        ax.set_xlabel(f"measured latency, {what}{primary} (ms, median)")
        ax.set_ylabel("predicted latency (ms)")
        ax.set_title(title or "latency table check", fontsize=10)
        met = check.metrics[clock]
        ax.text(
            0.03,
            0.97,
            f"MAPE {met['mape_pct']:.2f}% (ratio to unpruned: {met['ratio_mape_pct']:.2f}%)\n"
            f"Spearman {met['spearman']:.3f}, drift since build {met['drift_since_build_pct']:+.1f}%\n"
            f"noise (round CV) {met['noise_pct']:.2f}%\nsplit-half ρ {met['split_half_spearman']:.3f}",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
        )
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.8), fontsize=8)
    fig.tight_layout()
    return save_png(fig, path, dpi=110)
