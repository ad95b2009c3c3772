"""Channel-selection criteria for prunable groups (the reconstruction criterion ``lsq`` is in :mod:`.lsq`).

Every criterion scores the channels of one group (higher = more important, kept first). Scores are computed
from the group's *producers* (the layers whose output channels the group removes), summed over producers, so
coupled groups (residual streams, expand + depthwise convs) get one score per shared channel:

- ``l1`` / ``l2``: filter norms (Li et al. 2017). Differs from Torch-Pruning's ``MagnitudeImportance``, which
  also adds the consumers' input-channel weights and the BN scales and normalizes per group.
- ``bn_scale``: ``|gamma|`` of the group's BatchNorms (network slimming); groups without BN fall back to l1.
- ``taylor``: ``|w · dL/dw|`` over the producers' weights, biases and BN affine parameters, with the gradient
  accumulated over the calibration batches in eval mode (Molchanov et al. 2019; BN statistics are not updated).
- ``fpgm``: sum of Euclidean distances of a filter to the others (He et al. 2019, geometric median). Torch-
  Pruning's ``FPGMImportance`` measures distances between ``|w|^p`` instead; we follow the paper.
- ``random``: seeded uniform scores (a baseline).
- ``lsq``: channel selection by output reconstruction of the group's single consumer layer, then a
  least-squares refit of that consumer's weights (He et al. 2017 "channel pruning", as used by AMC), see
  :func:`prunegym.core.pruning.lsq.lsq_prune`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from prunegym.core.errors import UserError

log = logging.getLogger(__name__)

CRITERIA = ("l1", "l2", "taylor", "bn_scale", "fpgm", "random", "lsq")
NEEDS_CALIB = ("taylor", "lsq")


class Member(NamedTuple):
    """One module of a group with the channel indices it loses (``idxs``) and the group channel of each."""

    name: str
    module: nn.Module
    role: str  # "out": its output channels shrink (producer), "in": its input channels shrink (consumer)
    idxs: tuple[int, ...]
    root_idxs: tuple[int, ...]


def check_criterion(criterion: str, calib: object | None) -> None:
    """Check that ``criterion`` is known and has the calibration data it needs.

    Args:
        criterion: one of :data:`CRITERIA`.
        calib: the calibration batches (None: none given).

    Raises:
        UserError: unknown criterion, or a data-driven one (:data:`NEEDS_CALIB`) without ``calib``.
    """
    if criterion not in CRITERIA:
        raise UserError(f"unknown pruning criterion '{criterion}'; use one of {', '.join(CRITERIA)}")
    if criterion in NEEDS_CALIB and calib is None:
        raise UserError(f"criterion '{criterion}' needs calibration batches; pass calib=[(x, y), ...] or use l1")


def is_depthwise(m: nn.Module) -> bool:
    """Whether ``m`` is a depthwise conv (``groups == in_channels == out_channels > 1``)."""
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _scatter(n: int, root_idxs: Sequence[int], values: torch.Tensor) -> torch.Tensor:
    """Per-member values summed onto the group's ``n`` channels (float64, CPU)."""
    out = torch.zeros(n, dtype=torch.float64)
    out.index_add_(0, torch.tensor(root_idxs, dtype=torch.long), values.detach().double().cpu())
    return out


def _filters(m: Member) -> torch.Tensor:
    """The member's filters of the group's channels, flattened: (len(idxs), fan-in)."""
    return m.module.weight.detach()[list(m.idxs)].flatten(1)


def _norm_scores(weighted: Sequence[Member], n: int, p: int) -> torch.Tensor:
    """``l1`` (p=1) or ``l2`` (p=2) filter norms, summed over the producers."""
    score = torch.zeros(n, dtype=torch.float64)
    for m in weighted:
        score += _scatter(n, m.root_idxs, _filters(m).abs().pow(p).sum(1))
    return score if p == 1 else score.sqrt()


def _bn_scale_scores(norms: Sequence[Member], n: int) -> torch.Tensor:
    """``|gamma|`` of the group's BatchNorms, summed."""
    score = torch.zeros(n, dtype=torch.float64)
    for m in norms:
        score += _scatter(n, m.root_idxs, m.module.weight.detach()[list(m.idxs)].abs())
    return score


def _fpgm_scores(weighted: Sequence[Member], n: int) -> torch.Tensor:
    """Sum of Euclidean distances of each filter to the others (geometric median), summed over producers."""
    score = torch.zeros(n, dtype=torch.float64)
    for m in weighted:
        w = _filters(m).double()
        score += _scatter(n, m.root_idxs, torch.cdist(w[None], w[None])[0].sum(1))
    return score


def _taylor_scores(members: Sequence[Member], n: int) -> torch.Tensor:
    """``|w · dL/dw|`` over the members' weights and biases, per channel."""
    score = torch.zeros(n, dtype=torch.float64)
    for m in members:
        for param in (m.module.weight, m.module.bias):
            if param is None:
                continue
            if param.grad is None:
                raise UserError("taylor scores need gradients; the calibration batches produced none")
            wg = (param.detach() * param.grad.detach())[list(m.idxs)]
            score += _scatter(n, m.root_idxs, wg.abs().reshape(len(m.idxs), -1).sum(1))
    return score


def channel_scores(criterion: str, members: Sequence[Member], n: int, *, seed: int = 0) -> torch.Tensor:
    """Scores of a group's channels; higher is kept first. ``lsq`` is not scored here.

    Args:
        criterion: ``l1``, ``l2``, ``taylor`` (needs ``.grad``, see :func:`accumulate_gradients`), ``bn_scale``
            (l1 for groups without BatchNorm), ``fpgm`` or ``random``.
        members: the group's members with full indices.
        n: the group's channel count.
        seed: seeds ``random``.

    Returns:
        A float64 tensor of length ``n``.

    Raises:
        UserError: ``lsq`` or an unknown criterion, or ``taylor`` without gradients.
    """
    producers = [m for m in members if m.role == "out"]
    weighted = [m for m in producers if isinstance(m.module, nn.Conv2d | nn.Linear)]
    norms = [m for m in producers if isinstance(m.module, nn.modules.batchnorm._BatchNorm) and m.module.affine]
    if criterion == "bn_scale" and not norms:
        log.info("bn_scale: group without BatchNorm, scoring it by l1")
        criterion = "l1"
    if criterion in ("l1", "l2"):
        return _norm_scores(weighted, n, 1 if criterion == "l1" else 2)
    if criterion == "bn_scale":
        return _bn_scale_scores(norms, n)
    if criterion == "fpgm":
        return _fpgm_scores(weighted, n)
    if criterion == "taylor":
        return _taylor_scores(weighted + norms, n)
    if criterion == "random":
        return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    raise UserError(f"criterion '{criterion}' has no channel scores; use one of l1, l2, taylor, bn_scale, fpgm")


def lowest(scores: torch.Tensor, count: int) -> tuple[int, ...]:
    """Indices of the ``count`` lowest scores (ties: the higher index goes first), sorted.

    Args:
        scores: one score per channel.
        count: how many channels to pick.

    Returns:
        The picked channel indices in increasing order.
    """
    order = torch.argsort(-scores, stable=True)  # best first, ties by index
    return tuple(sorted(int(i) for i in order[len(scores) - count :]))


def split_calib(calib: Iterable) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Materialize calibration batches: ``(x, y)`` pairs or bare ``x`` tensors.

    Args:
        calib: an iterable of ``(x, y)`` tuples/lists or of ``x`` tensors.

    Returns:
        ``[(x, y or None), ...]``.

    Raises:
        UserError: an item is neither, or ``calib`` is empty.
    """
    batches = []
    for item in calib:
        if isinstance(item, torch.Tensor):
            batches.append((item, None))
        elif isinstance(item, tuple | list) and item and isinstance(item[0], torch.Tensor):
            batches.append((item[0], item[1] if len(item) > 1 else None))
        else:
            raise UserError(f"calibration batches must be (x, y) tensor pairs, got {type(item).__name__}")
    if not batches:
        raise UserError("calibration data is empty; pass a few (x, y) batches from the training split")
    return batches


def accumulate_gradients(net: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
    """Sum the cross-entropy gradients of ``net`` (in eval mode) over ``batches`` into ``.grad``.

    Args:
        net: the model; its ``.grad`` fields are reset first.
        batches: ``(x, y)`` pairs, as :func:`split_calib` returns them.

    Raises:
        UserError: a batch has no labels.
    """
    net.zero_grad(set_to_none=True)
    device = next(net.parameters()).device
    with torch.enable_grad():
        for x, y in batches:
            if y is None:
                raise UserError("criterion 'taylor' needs labels; pass calib as (x, y) batches")
            F.cross_entropy(net(x.to(device)), y.to(device), reduction="sum").backward()
