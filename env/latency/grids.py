"""Channel-count grids: every channel count a group, and each side of a layer, can take during the search.

A layer is profiled for every (input channels, output channels) pair the search can produce: the counts
:func:`~prunegym.core.pruning.kept_channels` gives for ratios in ``[0, max_ratio]`` at the table's ``round_to``.
With ``grid_step > 1`` only every ``grid_step``-th count per axis (plus both ends) is timed
(:func:`thin_axis`) and the rest is interpolated.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

from prunegym.core.errors import UserError
from prunegym.core.pruning import kept_channels

__all__ = ["group_counts", "shrink_features", "side_values", "thin_axis"]

_MAX_COMBINATIONS = 20000  # above this, a side fed by several groups takes every count in its range


def group_counts(channels: int, *, round_to: int, max_ratio: float, name: str | None = None) -> tuple[int, ...]:
    """Every channel count a group can keep for ratios in [0, max_ratio].

    Args:
        channels: the group's unpruned channel count.
        round_to: kept counts are rounded to this multiple.
        max_ratio: the largest ratio the search may choose.
        name: the group's name, for the error message.

    Returns:
        The counts, ascending.

    Raises:
        UserError: ``max_ratio`` leaves no channel of the group.
    """
    lowest = math.floor(channels * (1.0 - max_ratio) + 1e-6)
    if lowest < 1:
        raise UserError(
            f"max_ratio {max_ratio} leaves no channel of group '{name}' ({channels} channels); lower max_ratio"
        )
    counts = set()
    for raw in range(lowest, channels + 1):
        # a ratio whose floor(n * (1 - r)) is exactly ``raw``
        counts.add(kept_channels(channels, 1.0 - (raw + 0.5) / channels, round_to, name=name))
    return tuple(sorted(counts))


def shrink_features(features: int, count: int, n: int, kept: int) -> int:
    """Features left of a layer side after its group of ``n`` channels keeps ``kept`` (as ``CostTable`` counts).

    Args:
        features: the side's unpruned feature count.
        count: how many of them the group owns.
        n: the group's unpruned channel count.
        kept: the group's kept channel count.

    Returns:
        The side's feature count.
    """
    return features - count * (n - kept) // n


def side_values(
    features: int, links: Sequence[tuple[str, int]], counts: Mapping[str, tuple[int, ...]], channels: Mapping[str, int]
) -> tuple[int, ...]:
    """Every feature count one side (input or output) of a layer can take.

    Args:
        features: the side's unpruned feature count.
        links: (group, features it owns) of every group that shrinks this side.
        counts: group → its reachable kept counts (:func:`group_counts`).
        channels: group → its unpruned channel count.

    Returns:
        The reachable counts, ascending (every count in the range when the groups' combinations are too many).
    """
    if not links:
        return (features,)
    if len(links) == 1:
        g, c = links[0]
        return tuple(sorted({shrink_features(features, c, channels[g], k) for k in counts[g]}))
    if math.prod(len(counts[g]) for g, _ in links) <= _MAX_COMBINATIONS:
        values = set()
        for combo in itertools.product(*(counts[g] for g, _ in links)):
            v = features
            for (g, c), k in zip(links, combo, strict=True):
                v = shrink_features(v, c, channels[g], k)
            values.add(v)
        return tuple(sorted(values))
    lo = features
    for g, c in links:
        lo = shrink_features(lo, c, channels[g], counts[g][0])
    return tuple(range(lo, features + 1))


def thin_axis(values: Sequence[int], step: int) -> tuple[int, ...]:
    """Every ``step``-th value counted from the largest, plus the smallest.

    Args:
        values: ascending counts.
        step: keep every ``step``-th; 1 keeps all.

    Returns:
        The kept counts, ascending.
    """
    if step <= 1 or len(values) <= 2:
        return tuple(values)
    keep = set(values[::-1][::step]) | {values[0]}
    return tuple(sorted(keep))
