"""Exact MACs/parameters of any policy without pruning (:class:`CostTable`), and the uniform ratio for a MAC target.

The env uses the table to predict the cost of a policy at every step; it counts exactly as
:func:`prunegym.core.stats.model_stats` does on the pruned model.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from prunegym.core.models import PadShortcutConv
from prunegym.core.policy import Policy, PolicyError
from prunegym.core.pruning.apply import apply_policy_structure
from prunegym.core.pruning.depth import inside, removable_blocks
from prunegym.core.pruning.groups import RATIO_EPS, PrunableGroup, groups_of, kept_channels, traced_copy
from prunegym.core.pruning.importance import is_depthwise
from prunegym.core.pruning.trace import Traced
from prunegym.core.stats import model_stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerCost:
    """Full-width cost of one layer and which groups shrink it (``(group, features per group)``)."""

    name: str
    kind: str  # conv | linear | norm | other
    macs: int
    params: int
    out_features: int
    in_features: int
    per_out_in: int  # MACs per (output feature x input feature/groups); params likewise without spatial
    spatial: int
    bias: bool
    depthwise: bool
    groups: int
    out_group: tuple[str, int] | None
    in_groups: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class CostTable:
    """Predicts MACs and parameters of a pruned model from a policy, exactly as :func:`model_stats` counts them."""

    layers: tuple[LayerCost, ...]
    channels: Mapping[str, int]  # group name -> channels
    fixed_params: int  # parameters in no tracked layer
    fixed_in: Mapping[str, int]  # of those, the ones inside each removable block
    macs: int
    params: int

    def predict(
        self, ratios: Mapping[str, float], *, round_to: int = 1, removed: Collection[str] = ()
    ) -> tuple[int, int]:
        """MACs and parameters of the model pruned with ``ratios`` and without the ``removed`` blocks.

        Args:
            ratios: group name -> ratio; other names are ignored, missing groups are kept whole.
            round_to: round kept channel counts to this multiple.
            removed: module names of residual blocks removed outright; their layers cost nothing.

        Returns:
            ``(macs, params)``.
        """
        kept = {
            g: kept_channels(n, ratios.get(g, 0.0) if not inside(g, removed) else 0.0, round_to, name=g)
            for g, n in self.channels.items()
        }

        def shrink(features: int, group: str, count: int) -> int:
            n = self.channels[group]
            return features - count * (n - kept[group]) // n

        macs, params = 0, self.fixed_params - sum(self.fixed_in.get(b, 0) for b in removed)
        for la in self.layers:
            if removed and inside(la.name, removed):
                continue
            out = shrink(la.out_features, *la.out_group) if la.out_group else la.out_features
            inp = la.in_features
            for g, count in la.in_groups:
                inp = shrink(inp, g, count)
            if la.kind == "other":
                params += la.params * out // la.out_features
                continue
            if la.kind == "norm":
                params += la.params * out // la.out_features
                continue
            per_in = 1 if la.depthwise else inp // la.groups
            macs += out * per_in * la.per_out_in * la.spatial
            params += out * per_in * la.per_out_in + (out if la.bias else 0)
        return macs, params


def _group_features(
    traced: Traced, groups: Sequence[PrunableGroup]
) -> tuple[dict[str, tuple[str, int]], dict[str, dict[str, int]]]:
    """For each layer: the group shrinking its outputs, and the groups shrinking its inputs (with feature counts)."""
    out_of: dict[str, tuple[str, int]] = {}
    in_of: dict[str, dict[str, int]] = {}
    for g in groups:
        for m in traced.candidates[g.name]:
            if m.role == "out":
                out_of[m.name] = (g.name, len(m.idxs))
            else:
                in_of.setdefault(m.name, {})[g.name] = len(m.idxs)
    return out_of, in_of


def table_of(traced: Traced, groups: Sequence[PrunableGroup]) -> CostTable:
    """The :class:`CostTable` of a traced model and its groups.

    Args:
        traced: the traced model.
        groups: its groups (:func:`~prunegym.core.pruning.groups.groups_of`).

    Returns:
        The table.
    """
    stats = model_stats(traced.net, input_shape=traced.input_shape)
    out_of, in_of = _group_features(traced, groups)
    layers, tracked = [], 0
    by_name = {la.name: la for la in stats.layers}
    for name, mod in traced.modules.items():
        if isinstance(mod, PadShortcutConv):
            continue  # counted as the parameter-free shortcut it stands for (see core.stats)
        own = sum(p.numel() for p in mod.parameters(recurse=False))
        la = by_name.get(name)
        if la is not None:
            conv = isinstance(mod, nn.Conv2d)
            kk = la.kernel[0] * la.kernel[1] if conv else 1
            spatial = la.macs // max(1, la.out_channels * (la.in_channels // la.groups) * kk)
            layers.append(
                LayerCost(
                    name,
                    "conv" if conv else "linear",
                    la.macs,
                    own,
                    la.out_channels,
                    la.in_channels,
                    kk,
                    spatial,
                    getattr(mod, "bias", None) is not None,
                    is_depthwise(mod),
                    la.groups,
                    out_of.get(name),
                    tuple(in_of.get(name, {}).items()),
                )
            )
        elif own and name in out_of:
            kind = "norm" if isinstance(mod, nn.modules.batchnorm._BatchNorm) else "other"
            feats = out_of[name][1]
            layers.append(LayerCost(name, kind, 0, own, feats, feats, 0, 0, False, False, 1, out_of[name], ()))
        else:
            continue
        tracked += own
    channels = {g.name: g.out_channels for g in groups}
    layer_names = {la.name for la in layers}
    fixed_in = {
        block: sum(
            p.numel()
            for name, mod in traced.modules.items()
            if inside(name, (block,)) and name not in layer_names and not isinstance(mod, PadShortcutConv)
            for p in mod.parameters(recurse=False)
        )
        for block in removable_blocks(traced.net)
    }
    return CostTable(tuple(layers), channels, stats.params - tracked, fixed_in, stats.macs, stats.params)


def cost_table(model: nn.Module, *, input_shape: tuple[int, int, int], residual_stream: bool = True) -> CostTable:
    """A :class:`CostTable` that predicts ``model_stats`` MACs/params of any policy on ``model``.

    Args:
        model: the model (not modified).
        input_shape: ``(C, H, W)`` of one input.

    Returns:
        The table.
    """
    _, traced = traced_copy(model, input_shape, residual_stream=residual_stream)
    return table_of(traced, groups_of(traced))


def uniform_ratio_for_macs(
    model: nn.Module,
    *,
    input_shape: tuple[int, int, int],
    target_macs_fraction: float,
    round_to: int = 1,
    residual_stream: bool = True,
) -> float:
    """The smallest uniform ratio (over all prunable groups) that reaches a MAC target.

    Found by bisection on the exact :class:`CostTable` (checked against ``model_stats`` of
    :func:`apply_policy_structure` at the end).

    Args:
        model: the model (not modified).
        input_shape: ``(C, H, W)`` of one input.
        target_macs_fraction: the pruned model has at most this fraction of the original MACs.
        round_to: round kept channel counts to this multiple.

    Returns:
        The ratio (0.0 when the model already meets the target).

    Raises:
        PolicyError: the target is outside (0, 1], the model has no prunable groups, or no uniform ratio
            reaches the target.
    """
    if not 0.0 < target_macs_fraction <= 1.0:
        raise PolicyError(f"target_macs_fraction {target_macs_fraction} is outside (0, 1]; e.g. 0.5 for half the MACs")
    table = cost_table(model, input_shape=input_shape, residual_stream=residual_stream)
    target = target_macs_fraction * table.macs
    if not table.channels:
        raise PolicyError("the model has no prunable groups; nothing can reach a MAC target")

    def macs(r: float) -> int:
        return table.predict(dict.fromkeys(table.channels, r), round_to=round_to)[0]

    hi = min((n - 1) / n for n in table.channels.values() if n > 1) - RATIO_EPS
    if macs(0.0) <= target:
        return 0.0
    if macs(hi) > target:
        raise PolicyError(
            f"no uniform ratio reaches {target_macs_fraction:.1%} of the MACs (best {macs(hi) / table.macs:.1%} at "
            f"ratio {hi:.3f}); raise the target or prune per group"
        )
    lo = 0.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if macs(mid) <= target else (mid, hi)
    pol = Policy(ratios=dict.fromkeys(table.channels, hi), round_to=round_to, input_shape=tuple(input_shape))
    real = model_stats(apply_policy_structure(model, pol.to_dict()), input_shape=input_shape).macs
    if real != macs(hi):  # pragma: no cover - the cost table is exact by construction and by test
        log.warning("cost table predicts %d MACs, the pruned model has %d", macs(hi), real)
    return hi
