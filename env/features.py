"""AMC layer features (He et al. 2018, §3.2), one row per prunable group, normalized to [0, 1].

Columns: index, type, in-channels, out-channels, stride, kernel, MACs the group controls, MACs already
removed, MACs of the remaining groups, previous action, and whether the group may remove its residual block. The six static columns are min-max normalized over the
groups (as AMC does per column); the three dynamic ones are fractions of the model's total MACs, and the previous
action is the previous ratio (already in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

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
    "removable",
)
TYPE_CODE = {"conv": 0.0, "dwconv": 0.5, "linear": 1.0}


def static_features(groups: Sequence[PrunableGroup], *, removable: Collection[str] = ()) -> np.ndarray:
    """``len(groups) × 8``: the six static columns and the group's MACs, min-max normalized per column, and
    whether the group may remove its residual block (1) or not (0)."""
    raw = np.array(
        [
            [g.index, TYPE_CODE.get(g.type, 0.0), g.in_channels, g.out_channels, g.stride, g.kernel, g.group_macs]
            for g in groups
        ],
        dtype=np.float64,
    )
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    flags = np.array([[1.0 if g.name in removable else 0.0] for g in groups])
    return np.concatenate([(raw - lo) / span, flags], axis=1).astype(np.float32)


def observation(
    static: np.ndarray, *, index: int, macs_reduced: float, macs_rest: float, total_macs: float, prev_action: float
) -> np.ndarray:
    """The observation for group ``index``: its static row plus the dynamic columns, clipped into [0, 1]."""
    row = static[index]
    dynamic = np.array([macs_reduced / total_macs, macs_rest / total_macs, prev_action], dtype=np.float32)
    return np.clip(np.concatenate([row[:7], dynamic, row[7:]]), 0.0, 1.0).astype(np.float32)
