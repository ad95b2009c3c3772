"""Structured channel pruning on Torch-Pruning's DependencyGraph: prunable groups, costs, the pruner and masking.

One RL step acts on one *prunable group* (channels coupled through residual additions, depthwise convs,
flatten, ...), named after its root layer. Where we differ from Torch-Pruning: groups are verified numerically
and the ones TP cannot prune correctly are left out of the action space; channel counts come from one pure
function; costs are predicted exactly without pruning; pruned models are saved as base architecture + policy
record + state_dict.

Modules:

- :mod:`.groups`: :class:`PrunableGroup`, :func:`prunable_groups`, :func:`kept_channels` (channel arithmetic);
- :mod:`.trace`: the DependencyGraph wrapper and the numerical verification of every candidate group;
- :mod:`.costs`: :class:`CostTable` / :class:`LayerCost` (exact MACs/params of any policy),
  :func:`uniform_ratio_for_macs`;
- :mod:`.apply`: the pruner, :func:`apply_policy`, :func:`apply_policy_structure` (rebuild saved shapes);
- :mod:`.importance`: channel-selection criteria (l1, l2, taylor, bn_scale, fpgm, random) and :data:`CRITERIA`;
- :mod:`.lsq`: the ``lsq`` criterion (least-squares reconstruction, He et al. 2017 / AMC);
- :mod:`.masking`: masked ("sparse") pruning and ``transform`` of a masked model into a dense one.
"""

from __future__ import annotations

from prunegym.core.pruning.apply import apply_policy, apply_policy_structure, prune_in_place
from prunegym.core.pruning.costs import CostTable, LayerCost, cost_table, uniform_ratio_for_macs
from prunegym.core.pruning.depth import (
    RemovedBlock,
    RemovedReluBlock,
    block_groups,
    inner_group_of,
    inside,
    removable_blocks,
    remove_blocks,
    residual_kind,
)
from prunegym.core.pruning.groups import PrunableGroup, kept_channels, prunable_groups
from prunegym.core.pruning.importance import CRITERIA, NEEDS_CALIB
from prunegym.core.pruning.masking import (
    TransformResult,
    make_masks_permanent,
    mask_keeper,
    mask_policy,
    max_abs_diff,
    merge_prune_masks,
    transform,
)
from prunegym.core.pruning.trace import copy_model

__all__ = [
    "CRITERIA",
    "NEEDS_CALIB",
    "CostTable",
    "LayerCost",
    "PrunableGroup",
    "RemovedBlock",
    "RemovedReluBlock",
    "TransformResult",
    "apply_policy",
    "apply_policy_structure",
    "block_groups",
    "copy_model",
    "cost_table",
    "inner_group_of",
    "inside",
    "kept_channels",
    "make_masks_permanent",
    "mask_keeper",
    "mask_policy",
    "max_abs_diff",
    "merge_prune_masks",
    "prunable_groups",
    "prune_in_place",
    "removable_blocks",
    "remove_blocks",
    "residual_kind",
    "transform",
    "uniform_ratio_for_macs",
]
