"""AMC layer features (He et al. 2018, §3.2), one row per prunable group, normalized to [0, 1].

Columns: index, type, in-channels, out-channels, stride, kernel, MACs the group controls, MACs already
removed, MACs of the remaining groups, previous action. The six static columns are min-max normalized over the
groups (as AMC does per column); the three dynamic ones are fractions of the model's total MACs, and the previous
action is the previous ratio (already in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prunegym.core.pruning import PrunableGroup

FEATURES = (
    "index",
    "type",
    "in_channels",
    "out_channels",
    "stride",
    "kernel",
    "macs",
    "macs_reduced",
    "macs_rest",
    "prev_action",
)
TYPE_CODE = {"conv": 0.0, "dwconv": 0.5, "linear": 1.0}


def static_features(groups: Sequence[PrunableGroup]) -> np.ndarray:
    """``len(groups) × 7`` array: the six static columns and the group's MACs, min-max normalized per column."""
    raw = np.array(
        [
            [g.index, TYPE_CODE.get(g.type, 0.0), g.in_channels, g.out_channels, g.stride, g.kernel, g.group_macs]
            for g in groups
        ],
        dtype=np.float64,
    )
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return ((raw - lo) / span).astype(np.float32)


def observation(
    static: np.ndarray, *, index: int, macs_reduced: float, macs_rest: float, total_macs: float, prev_action: float
) -> np.ndarray:
    """The observation for group ``index``: its static row plus the dynamic columns, clipped into [0, 1]."""
    dynamic = np.array([macs_reduced / total_macs, macs_rest / total_macs, prev_action], dtype=np.float32)
    return np.clip(np.concatenate([static[index], dynamic]), 0.0, 1.0).astype(np.float32)
