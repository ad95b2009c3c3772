"""The pruner: apply a policy to a model by removing channels physically (Torch-Pruning does the surgery).

Channels are chosen per group by a criterion (:mod:`.importance`, or ``lsq`` reconstruction in :mod:`.lsq`) and
counted by :func:`~prunegym.core.pruning.groups.kept_channels`. Pruned models are saved as base architecture +
:meth:`Policy.to_dict` (with ``round_to`` and ``input_shape``) + state_dict; :func:`apply_policy_structure`
rebuilds the shapes without data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from torch import nn

from prunegym.core.models import ZOO, model_info
from prunegym.core.policy import Policy, PolicyError
from prunegym.core.pruning.depth import inside, remove_blocks
from prunegym.core.pruning.groups import kept_channels
from prunegym.core.pruning.importance import (
    accumulate_gradients,
    channel_scores,
    check_criterion,
    lowest,
    split_calib,
)
from prunegym.core.pruning.lsq import lsq_prune
from prunegym.core.pruning.shortcuts import PadShortcutConv, has_pad_shortcuts, rewrite_pad_shortcuts
from prunegym.core.pruning.trace import Traced, candidate_names, copy_model, out_channels

log = logging.getLogger(__name__)


def as_policy(policy: Policy | Mapping[str, Any]) -> Policy:
    """``policy`` as a :class:`Policy`: a Policy, a :meth:`Policy.to_dict` record, or a bare ``{group: ratio}``."""
    if isinstance(policy, Policy):
        return policy
    if "ratios" in policy:
        return Policy.from_dict(policy)
    return Policy(ratios=dict(policy))


def _check_policy(traced: Traced, policy: Policy) -> None:
    """Raise :class:`PolicyError` if ``policy`` prunes a left-out group or names an unknown one."""
    for key in policy.ratios:
        if key in traced.skipped and policy.ratio(key) > 0:
            raise PolicyError(f"policy prunes group '{key}', which is not prunable ({traced.skipped[key]}); drop it")
    policy.validate([*traced.candidates, *traced.skipped])


def _check_model(policy: Policy, model: nn.Module) -> None:
    """Raise :class:`PolicyError` when the policy names a zoo model other than ``model``'s (ResNet-20 and -32
    share group names, so the names alone would not tell)."""
    info = model_info(model)
    made_for = (policy.model or "").lower()
    this = (info.name if info is not None else "").lower()
    if made_for in ZOO and this in ZOO and made_for != this:
        raise PolicyError(
            f"the policy was made for {made_for}, this model is {this}; search a policy for this model "
            "(or edit the policy's model: field if you mean it)"
        )


def _needs_stream_rewrite(net: nn.Module, input_shape: tuple[int, int, int], policy: Policy) -> bool:
    """Whether ``policy`` names a group that exists only once the padded shortcuts are rewritten.

    The decision reads the policy's group names only (not its ratios), so a policy record rebuilds the
    architecture it was applied to: a search's policies name every group, records made before residual-stream
    pruning existed name only the inner groups.
    """
    if not has_pad_shortcuts(net):
        return False
    return not set(policy.ratios) <= candidate_names(net, input_shape)


def _plan(traced: Traced, policy: Policy, round_to: int) -> list[tuple[str, int, int]]:
    """``[(group, channels, kept)]`` of the groups the policy shrinks, in forward order."""
    plan = []
    for name in traced.candidates:
        n = out_channels(traced.modules[name])
        keep = kept_channels(n, policy.ratio(name), round_to, name=name)
        if keep < n:
            plan.append((name, n, keep))
    return plan


def _prune_by_lsq(
    net: nn.Module, traced: Traced, plan: list[tuple[str, int, int]], batches: list, original: nn.Module | None
) -> dict[str, tuple[int, ...]]:
    """Choose and remove the planned channels by reconstruction against ``original`` (a copy of ``net`` if None)."""
    ref = original if original is not None else copy_model(net)
    ref_training = ref.training
    ref.eval()
    try:
        return lsq_prune(net, ref, plan=plan, members=traced.members, prune=traced.prune, batches=batches)
    finally:
        ref.train(ref_training)


def _prune_by_scores(
    net: nn.Module, traced: Traced, plan: list[tuple[str, int, int]], batches: list, criterion: str
) -> dict[str, tuple[int, ...]]:
    """Score every planned group on the unpruned weights, then remove each group's lowest-scored channels."""
    if criterion == "taylor":
        accumulate_gradients(net, batches)
    removed = {
        name: lowest(channel_scores(criterion, traced.members(name), n, seed=i), n - keep)
        for i, (name, n, keep) in enumerate(plan)
    }
    if criterion == "taylor":
        net.zero_grad(set_to_none=True)
    for name, idxs in removed.items():
        traced.prune(name, idxs)
    return removed


def prune_in_place(
    net: nn.Module,
    policy: Policy,
    *,
    input_shape: tuple[int, int, int],
    criterion: str = "l1",
    round_to: int = 1,
    calib: Iterable | None = None,
    original: nn.Module | None = None,
    residual_stream: bool = True,
) -> dict[str, tuple[int, ...]]:
    """Prune ``net`` itself by ``policy``.

    The policy's ``removed`` blocks go first (:mod:`.depth`; ratios of groups inside them are ignored).
    Scores of all criteria but lsq are computed on the unpruned weights before any channel is removed. When the
    policy names a residual-stream group (``residual_stream``), option-A padded shortcuts are first rewritten into
    their exact frozen 1×1 convolutions (:mod:`.shortcuts`); the decision depends on the policy's group names
    alone, so a saved policy record rebuilds the same architecture.

    Args:
        net: the model, pruned in place (its train/eval flag is restored).
        policy: the per-group ratios.
        input_shape: ``(C, H, W)`` of one input.
        criterion: one of :data:`~prunegym.core.pruning.importance.CRITERIA`.
        round_to: round kept channel counts to this multiple.
        calib: calibration batches, needed by ``taylor`` and ``lsq``.
        original: an unpruned copy, for ``lsq``'s reconstruction targets (default: a copy of ``net``).
        residual_stream: allow pruning the residual stream of padded-shortcut ResNets.

    Returns:
        The removed channel indices per group.

    Raises:
        PolicyError: the policy prunes a group left out of the action space or names an unknown group.
        UserError: an unknown criterion, or missing calibration data.
    """
    check_criterion(criterion, calib)
    training = net.training
    net.eval()
    if policy.removed:
        remove_blocks(net, policy.removed)
        if original is not None:
            original = copy_model(original)
            remove_blocks(original, policy.removed)
        policy = replace(policy, ratios={k: v for k, v in policy.ratios.items() if not inside(k, policy.removed)})
    try:
        if residual_stream and _needs_stream_rewrite(net, input_shape, policy):
            rewrite_pad_shortcuts(net)
            if original is not None:
                original = copy_model(original)
                rewrite_pad_shortcuts(original)
        traced = Traced(net, input_shape)
        _check_policy(traced, policy)
        plan = _plan(traced, policy, round_to)
        if not plan:
            return {}
        batches = split_calib(calib) if calib is not None else []
        if criterion == "lsq":
            return _prune_by_lsq(net, traced, plan, batches, original)
        return _prune_by_scores(net, traced, plan, batches, criterion)
    finally:
        net.train(training)
        for m in net.modules():
            if isinstance(m, PadShortcutConv):
                m.weight.requires_grad_(False)  # Torch-Pruning's new Parameter would train


def apply_policy(
    model: nn.Module,
    policy: Policy | Mapping[str, Any],
    *,
    input_shape: tuple[int, int, int],
    criterion: str = "l1",
    round_to: int | None = None,
    calib: Iterable | None = None,
    residual_stream: bool = True,
) -> nn.Module:
    """A pruned deep copy of ``model`` (the input is never modified; ``prunegym_info`` is kept).

    ``criterion`` is not read from the policy (its ``criterion`` field is a record). Applying a policy to an
    already pruned model records only that last step in ``prunegym_policy``; for iterative rounds use masked
    mode (:mod:`prunegym.core.pruning.masking`) and one final ``transform``.

    Args:
        model: the model to prune.
        policy: a :class:`Policy`, its :meth:`Policy.to_dict` record, or ``{group: ratio}``.
        input_shape: ``(C, H, W)`` of one input.
        criterion: the channel-selection criterion.
        round_to: round kept channel counts to this multiple (default: the policy's).
        calib: an iterable of ``(x, y)`` batches (materialized once), needed by "taylor" and "lsq".
        residual_stream: allow pruning the residual stream of padded-shortcut ResNets (see :func:`prune_in_place`).

    Returns:
        The pruned copy. It carries ``prunegym_policy``: the :meth:`Policy.to_dict` record (with the effective
        ``round_to``, ``criterion`` and ``input_shape``) to pass to ``checkpoint.save_model(policy=...)``.
    """
    pol = as_policy(policy)
    _check_model(pol, model)
    rt = pol.round_to if round_to is None else int(round_to)
    net = copy_model(model)
    prune_in_place(
        net,
        pol,
        input_shape=input_shape,
        criterion=criterion,
        round_to=rt,
        calib=calib,
        original=model,
        residual_stream=residual_stream,
    )
    info = model_info(model)
    pol = replace(
        pol,
        round_to=rt,
        criterion=criterion,
        input_shape=tuple(input_shape),
        model=pol.model or (info.name if info else ""),
    )
    net.prunegym_policy = pol.to_dict()  # type: ignore[assignment]
    return net


def apply_policy_structure(model: nn.Module, policy_dict: Mapping[str, Any]) -> nn.Module:
    """Prune ``model`` (a freshly built base model) to the shapes of a saved policy record, without data.

    Channels are chosen by l1 on whatever weights ``model`` holds; the caller loads the saved state_dict next.

    Args:
        model: the base model (not modified).
        policy_dict: :meth:`Policy.to_dict` output; its ``input_shape`` is required for models whose shapes
            depend on the input size (flatten + linear), else the model's ``in_channels`` at 32x32 is assumed.

    Returns:
        The pruned copy, carrying ``prunegym_policy`` (with the input shape used).
    """
    pol = as_policy(policy_dict)
    shape = pol.input_shape
    if shape is None:
        info = model_info(model)
        shape = (info.in_channels if info else 3, 32, 32)
        log.warning("policy record has no input_shape; rebuilding with %s", shape)
    net = copy_model(model)
    prune_in_place(net, pol, input_shape=shape, criterion="l1", round_to=pol.round_to)
    net.prunegym_policy = replace(pol, input_shape=shape).to_dict()  # type: ignore[assignment]
    return net
