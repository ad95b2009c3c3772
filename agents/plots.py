"""Figures of a search run (PNG, matplotlib's Agg canvas; no global backend switch, no display needed).

- :func:`plot_search_curve`: reward per episode and best-so-far, warm-up shaded (AMC's search curves);
- :func:`plot_policy`: channels kept vs pruned per group as stacked bars (AMC's per-layer policy figures).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from prunegym.core.io import read_jsonl
from prunegym.core.plots import save_png
from prunegym.core.policy import Policy
from prunegym.core.pruning import inside, kept_channels
from prunegym.core.run_folder import BEST_POLICY_FILE, EPISODES_FILE

__all__ = ["plot_policy", "plot_run", "plot_search_curve"]

SEARCH_CURVE_FILE = "search_curve.png"
POLICY_PLOT_FILE = "best_policy.png"


def plot_search_curve(*, run_dir: Path, out: Path | None = None, warmup_episodes: int = 0) -> Path:
    """Reward per episode (dots) and best reward so far (line) from ``run_dir/episodes.jsonl``.

    Args:
        run_dir: the run folder.
        out: the PNG to write (default ``run_dir/search_curve.png``)
        warmup_episodes: episodes of random warm-up, shaded.
    """
    run_dir = Path(run_dir)
    records = read_jsonl(run_dir / EPISODES_FILE)
    if not records:
        raise ValueError(f"{run_dir / 'episodes.jsonl'} holds no episodes; run a search first")
    episodes = np.array([int(r["episode"]) for r in records])
    rewards = np.array([float(r["reward"]) for r in records])
    finite = np.where(np.isfinite(rewards), rewards, -np.inf)
    best = np.maximum.accumulate(finite)
    fig = Figure(figsize=(7.0, 4.0), dpi=120)
    ax = fig.add_subplot()
    if warmup_episodes > 0:
        ax.axvspan(-0.5, warmup_episodes - 0.5, color="0.9", label=f"warm-up ({warmup_episodes} random episodes)")
    ax.scatter(episodes, rewards, s=8, alpha=0.6, label="episode reward")
    ax.plot(episodes, np.where(np.isfinite(best), best, np.nan), color="C3", label="best so far")
    ax.set_xlabel("episode")
    ax.set_ylabel("reward")
    ax.set_title(f"search: {run_dir.name}")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, run_dir / SEARCH_CURVE_FILE if out is None else out)


def plot_policy(
    *,
    policy: Policy | Mapping[str, float],
    channels: Mapping[str, int],
    out: Path,
    round_to: int | None = None,
    title: str | None = None,
) -> Path:
    """Stacked bars of channels kept (bottom) and pruned (top) per group, in ``channels`` order; the groups of a
    block the policy removes are drawn as grey hatched bars ("block removed").

    Args:
        policy: a :class:`~prunegym.core.policy.Policy` or ``{group: ratio}``; groups it omits keep all channels.
        channels: output channels per group before pruning.
        out: the PNG to write.
        round_to: channel rounding of the pruner (default: the policy's ``round_to``, else 1)
        title: figure title.
    """
    ratios = dict(policy.ratios) if isinstance(policy, Policy) else dict(policy)
    unknown = sorted(set(ratios) - set(channels))
    if unknown:
        raise ValueError(f"policy names group '{unknown[0]}' that has no channel count; pass channels for it")
    multiple = round_to if round_to is not None else (policy.round_to if isinstance(policy, Policy) else 1)
    names = list(channels)
    total = np.array([int(channels[n]) for n in names])
    removed_blocks = tuple(policy.removed) if isinstance(policy, Policy) else ()
    gone = np.array([inside(n, removed_blocks) for n in names], dtype=bool)
    kept = np.array([kept_channels(int(channels[n]), ratios.get(n, 0.0), multiple) for n in names])
    kept[gone] = 0
    x = np.arange(len(names))
    fig = Figure(figsize=(max(6.0, 0.3 * len(names) + 2.0), 4.0), dpi=120)
    ax = fig.add_subplot()
    ax.bar(x, kept, color="C0", label="kept")
    ax.bar(x[~gone], (total - kept)[~gone], bottom=kept[~gone], color="C1", alpha=0.6, label="pruned")
    if gone.any():
        ax.bar(x[gone], total[gone], color="0.8", hatch="//", edgecolor="0.45", label="block removed")
    ax.set_xticks(x, names, rotation=90, fontsize="x-small")
    ax.set_ylabel("output channels")
    blocks = f", {len(removed_blocks)} block(s) removed" if removed_blocks else ""
    ax.set_title(title or f"per-group policy: {kept.sum()}/{total.sum()} channels kept{blocks}")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_png(fig, out)


def plot_run(*, run_dir: Path, channels: Mapping[str, int] | None = None, warmup_episodes: int = 0) -> list[Path]:
    """The search curve, and the best policy's bars when ``channels`` is given; returns the PNGs written."""
    run_dir = Path(run_dir)
    written = [plot_search_curve(run_dir=run_dir, warmup_episodes=warmup_episodes)]
    best = run_dir / BEST_POLICY_FILE
    if channels is not None and best.exists():
        written.append(plot_policy(policy=Policy.load(best), channels=channels, out=run_dir / POLICY_PLOT_FILE))
    return written
