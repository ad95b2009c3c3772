"""Masked ("sparse") pruning and the ``transform`` that turns a masked model into a dense, smaller one.

This is the Vitis-AI/DeePhi workflow: ``prune`` zeroes channels but keeps every shape (so the model can be
finetuned as is), ``transform`` removes the zeroed channels physically.

**Masking rule.** :func:`mask_policy` zeroes, for each removed channel, every producer of the group (conv or
linear filter and bias, BatchNorm ``gamma``/``beta``/``running_mean`` with ``running_var`` = 1), so the
channel's post-BN output is exactly 0 and stays 0 through ReLU-like activations and pooling.

**Transform exactness rule.** :func:`transform` removes a channel only when it is provably dead: either every
(non-depthwise) conv/linear producer of the group has an all-zero filter and zero bias for it, depthwise
producers have zero bias, and every BatchNorm of the group maps 0 to exactly 0 for it; or every BatchNorm of
the group has gamma = beta = 0 for it (its output is 0 whatever the conv computes). A channel with zero
filters whose BatchNorm turns it into a nonzero constant ``beta - gamma * mean / sqrt(var + eps)`` is *kept*
and logged: folding a constant into the next layer's bias is not exact where that layer zero-pads its input
(the borders see 0, not the constant). Each group's removal is then checked on random inputs and undone if
the outputs move by more than ``atol`` (relative to the output scale), e.g. behind an activation with
``f(0) != 0``. Masks from ``torch.nn.utils.prune`` (``weight_orig``/``weight_mask``) are made permanent first;
for a bare state_dict holding them use :func:`merge_prune_masks`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from prunegym.core.errors import UserError
from prunegym.core.models import model_info
from prunegym.core.policy import Policy
from prunegym.core.pruning.apply import as_policy, prune_in_place
from prunegym.core.pruning.groups import kept_channels
from prunegym.core.pruning.importance import Member, is_depthwise
from prunegym.core.pruning.trace import Traced, copy_model, out_channels, restore, snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class TransformResult:
    """The dense model, the policy whose :func:`apply_policy_structure` reproduces its shapes, and checks."""

    model: nn.Module
    policy: Policy
    removed: Mapping[str, int]  # group -> channels removed
    kept_constant: Mapping[str, int]  # group -> zero-filter channels kept because BN makes them constant
    max_abs_diff: float  # masked vs dense, on the check inputs


def max_abs_diff(a: nn.Module, b: nn.Module, *, input_shape: tuple[int, int, int], n: int = 8, seed: int = 0) -> float:
    """Largest absolute output difference of ``a`` and ``b`` (both run in eval mode) on seeded N(0,1) inputs.

    Args:
        a: one model (its train/eval flag is restored).
        b: the other.
        input_shape: ``(C, H, W)`` of one input.
        n: number of inputs.
        seed: seeds the inputs.

    Returns:
        ``max |a(x) - b(x)|``.

    Raises:
        ValueError: the models' outputs differ in shape.
    """
    x = torch.randn(n, *input_shape, generator=torch.Generator().manual_seed(seed))
    outs = []
    for model in (a, b):
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                outs.append(model(x.to(next(model.parameters()).device)).detach().cpu())
        finally:
            model.train(training)
    if outs[0].shape != outs[1].shape:
        raise ValueError(f"models disagree on output shape {tuple(outs[0].shape)} vs {tuple(outs[1].shape)}")
    return float((outs[0] - outs[1]).abs().max())


def merge_prune_masks(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace ``X_orig``/``X_mask`` pairs written by ``torch.nn.utils.prune`` with ``X = X_orig * X_mask``.

    Args:
        state_dict: a state_dict, possibly holding such pairs.

    Returns:
        A new state_dict without them.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state_dict:
            continue
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in state_dict:
            base = key[: -len("_orig")]
            out[base] = value * state_dict[base + "_mask"]
        else:
            out[key] = value
    return out


def make_masks_permanent(model: nn.Module) -> nn.Module:
    """``torch.nn.utils.prune.remove`` every pruning reparametrization of ``model``, in place.

    Args:
        model: the model.

    Returns:
        ``model`` itself.
    """
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return model


def _rows(member: Member, channels: set[int]) -> list[int]:
    """The member's own indices of the given group channels."""
    return [i for i, r in zip(member.idxs, member.root_idxs, strict=True) if r in channels]


@torch.no_grad()
def _zero(member: Member, rows: Sequence[int], persistent: bool) -> None:
    """Zero a producer's rows (BatchNorm: also mean 0, var 1); ``persistent`` registers prune masks."""
    mod = member.module
    if not rows:
        return
    params = []
    if isinstance(mod, nn.Conv2d | nn.Linear):
        params = ["weight", "bias"]
    elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
        if mod.affine:
            params = ["weight", "bias"]
        if mod.running_mean is not None:
            mod.running_mean[rows] = 0.0
            mod.running_var[rows] = 1.0
    else:
        log.debug("mask: %s (%s) left as is", member.name, type(mod).__name__)
    for pname in params:
        param = getattr(mod, pname)
        if param is None:
            continue
        param[rows] = 0.0
        if persistent:
            mask = torch.ones_like(param)
            mask[rows] = 0.0
            torch_prune.custom_from_mask(mod, pname, mask)


def mask_policy(
    model: nn.Module,
    policy: Policy | Mapping[str, Any],
    *,
    input_shape: tuple[int, int, int],
    criterion: str = "l1",
    round_to: int | None = None,
    calib: Iterable | None = None,
    persistent: bool = False,
) -> nn.Module:
    """A copy of ``model`` with the channels :func:`apply_policy` would remove zeroed in place, shapes unchanged.

    The channels are chosen exactly as the pruner chooses them (same criterion, rounding and ``calib``); with
    ``lsq`` only the selection is used (the consumer refit needs the physical removal).

    Args:
        model: the model (not modified).
        policy: a :class:`Policy`, its :meth:`Policy.to_dict` record, or ``{group: ratio}``.
        input_shape: ``(C, H, W)`` of one input.
        criterion: the channel-selection criterion.
        round_to: round kept channel counts to this multiple (default: the policy's).
        calib: calibration batches, needed by "taylor" and "lsq".
        persistent: register ``torch.nn.utils.prune`` masks so the zeros survive finetuning (the state_dict
            then holds ``weight_orig``/``weight_mask``; :func:`transform` accepts that).

    Returns:
        The masked copy. It carries ``prunegym_mask``: ``{group: [removed channel indices]}``.
    """
    pol = as_policy(policy)
    rt = pol.round_to if round_to is None else int(round_to)
    scratch = copy_model(model)
    removed = prune_in_place(
        scratch,
        pol,
        input_shape=input_shape,
        criterion=criterion,
        round_to=rt,
        calib=calib,
        original=model,
        residual_stream=False,  # masks keep the original architecture: the residual stream is pruned dense only
    )
    del scratch
    net = copy_model(model)
    training = net.training
    net.eval()
    traced = Traced(net, input_shape)
    for name, idxs in removed.items():
        chans = set(idxs)
        for member in traced.members(name):
            if member.role == "out":
                _zero(member, _rows(member, chans), persistent)
    net.train(training)
    net.prunegym_mask = {name: list(idxs) for name, idxs in removed.items()}  # type: ignore[assignment]
    return net


def _mask_targets(traced: Traced, mask: Mapping[str, Sequence[int]]) -> list[tuple[nn.Module, str, list[int], float]]:
    """``(module, attribute, rows, value)`` to re-write; (module, attribute) because a device move replaces buffers."""
    targets: list[tuple[nn.Module, str, list[int], float]] = []
    for name, idxs in mask.items():
        if name not in traced.candidates:
            raise UserError(f"mask names group '{name}', which this model does not have; re-create the masked model")
        for member in traced.members(name):
            if member.role != "out":
                continue
            rows = _rows(member, set(idxs))
            mod = member.module
            if not rows:
                continue
            for pname in ("weight", "bias"):
                if isinstance(getattr(mod, pname, None), torch.Tensor):
                    targets.append((mod, pname, rows, 0.0))
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.running_mean is not None:
                targets += [(mod, "running_mean", rows, 0.0), (mod, "running_var", rows, 1.0)]
    return targets


def mask_keeper(
    model: nn.Module, mask: Mapping[str, Sequence[int]], *, input_shape: tuple[int, int, int]
) -> Callable[[], None]:
    """A function that (re-)zeroes the masked channels of ``model`` in place.

    Call it after every optimizer step so a masked ("sparse") model stays masked while it is finetuned, with a
    plain state_dict throughout. It is called once before it is returned.

    Args:
        model: the masked model.
        mask: :attr:`prunegym_mask` (``{group: [removed channel indices]}``) as saved with the model.
        input_shape: ``(C, H, W)`` of one input.

    Returns:
        The zeroing function.

    Raises:
        UserError: ``mask`` names a group the model does not have.
    """
    training = model.training
    model.eval()
    traced = Traced(model, input_shape)
    model.train(training)
    targets = _mask_targets(traced, mask)

    @torch.no_grad()
    def keep() -> None:
        for mod, attr, rows, value in targets:
            getattr(mod, attr)[rows] = value

    keep()
    return keep


@torch.no_grad()
def _bn_at_zero(mod: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """The BatchNorm's (eval-mode) output for a zero input, per channel."""
    return F.batch_norm(
        torch.zeros(1, mod.num_features, device=mod.running_mean.device),
        mod.running_mean,
        mod.running_var,
        mod.weight,
        mod.bias,
        training=False,
        eps=mod.eps,
    )[0].cpu()


@torch.no_grad()
def _dead_channels(members: Sequence[Member], n: int) -> tuple[list[int], list[int]]:
    """(dead, constant) channels of a group, by its producers' parameters.

    Dead: (a) every non-depthwise conv/linear producer has an all-zero filter and every conv/linear producer a
    zero bias, and every BatchNorm maps 0 to exactly 0; or (b) every BatchNorm of the group has gamma = beta = 0
    (its output is exactly 0 whatever it reads). Constant: (a) holds for the filters but a BatchNorm maps 0 to a
    nonzero value. Candidates are checked numerically by :func:`transform` before removal.
    """
    filt_zero = torch.ones(n, dtype=torch.bool)
    bn_at_zero = torch.ones(n, dtype=torch.bool)
    bn_killed = torch.ones(n, dtype=torch.bool)
    has_filter = has_bn = False
    for m in members:
        if m.role != "out":
            continue
        mod, rows = m.module, torch.tensor(m.idxs, dtype=torch.long)
        roots = torch.tensor(m.root_idxs, dtype=torch.long)
        if isinstance(mod, nn.Conv2d | nn.Linear):
            ok = torch.ones(len(rows), dtype=torch.bool)
            if not is_depthwise(mod):
                has_filter = True
                ok &= (mod.weight.detach()[rows.to(mod.weight.device)].flatten(1) == 0).all(1).cpu()
            if mod.bias is not None:
                ok &= (mod.bias.detach()[rows.to(mod.bias.device)] == 0).cpu()
            filt_zero[roots[~ok]] = False
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            has_bn = True
            if mod.running_mean is None or not mod.affine:
                bn_at_zero[roots] = False
                bn_killed[roots] = False
                continue
            bn_at_zero[roots[_bn_at_zero(mod)[rows] != 0]] = False
            killed = (
                (mod.weight.detach()[rows.to(mod.weight.device)] == 0)
                & (mod.bias.detach()[rows.to(mod.weight.device)] == 0)
            ).cpu()
            bn_killed[roots[~killed]] = False
        else:  # a producer we cannot reason about
            filt_zero[roots] = False
            bn_killed[roots] = False
    filt_zero &= has_filter
    bn_killed &= has_bn
    dead = torch.nonzero((filt_zero & bn_at_zero) | bn_killed).flatten().tolist()
    const = torch.nonzero(filt_zero & ~bn_at_zero & ~bn_killed).flatten().tolist()
    return dead, const


def _candidates(traced: Traced, name: str, n: int, constant: dict[str, int]) -> list[int]:
    """The group's dead channels to try removing (one kept if all are dead); records kept constant ones."""
    dead, const = _dead_channels(traced.members(name), n)
    if const:
        constant[name] = len(const)
        log.info(
            "transform: group '%s': %d zero-filter channels have a nonzero constant output after BatchNorm; "
            "kept (removing them is not exact where the next layer zero-pads)",
            name,
            len(const),
        )
    if len(dead) == n:
        log.info(
            "transform: group '%s' is entirely dead; keeping channel %d so the model stays connected", name, dead[0]
        )
        dead = dead[1:]
    return dead


def _remove_checked(traced: Traced, name: str, dead: list[int], x: torch.Tensor, ref: torch.Tensor, tol: float) -> bool:
    """Remove ``dead`` channels of group ``name``; undo and return False if the outputs move by more than ``tol``."""
    group = traced.root_group(name, dead)
    snaps = snapshot(item.dep.target.module for item in group)
    group.prune(record_history=False)
    with torch.no_grad():
        out = traced.net(x)
    diff = float((out - ref).abs().max()) if out.shape == ref.shape else float("inf")
    if diff > tol:
        restore(snaps)
        log.info(
            "transform: group '%s' kept whole: removing its %d zero channels moves the outputs by %.3g",
            name,
            len(dead),
            diff,
        )
        return False
    return True


def transform(model: nn.Module, *, input_shape: tuple[int, int, int], atol: float = 1e-5) -> TransformResult:
    """Physically remove the provably dead channels of a masked ``model`` (see the module docstring).

    Args:
        model: the masked model (not modified); ``torch.nn.utils.prune`` masks are made permanent on a copy.
        input_shape: ``(C, H, W)`` of one input.
        atol: a removal is accepted when the outputs move by at most ``atol * max(1, max|output|)``.

    Returns:
        A :class:`TransformResult`; ``result.policy`` (ratios = removed / channels, ``round_to`` 1) rebuilds the
        dense shapes with :func:`apply_policy_structure`, so ``save_model(policy=result.policy.to_dict())`` works.
    """
    net = make_masks_permanent(copy_model(model))
    training = net.training
    net.eval()
    x = torch.randn(8, *input_shape, generator=torch.Generator().manual_seed(0))
    x = x.to(next(net.parameters()).device)
    with torch.no_grad():
        ref = net(x)
    tol = atol * max(1.0, float(ref.abs().max()))
    traced = Traced(net, input_shape)
    removed: dict[str, int] = {}
    constant: dict[str, int] = {}
    ratios: dict[str, float] = {}
    for name in list(traced.candidates):
        n = out_channels(traced.modules[name])
        dead = _candidates(traced, name, n, constant)
        if not dead or not _remove_checked(traced, name, dead, x, ref, tol):
            continue
        removed[name] = len(dead)
        ratios[name] = len(dead) / n
        if kept_channels(n, ratios[name]) != n - len(dead):  # pragma: no cover - floor(n * (1 - k/n) + eps)
            raise RuntimeError(f"ratio {ratios[name]} of group '{name}' does not reproduce {n - len(dead)} channels")
    with torch.no_grad():
        final = float((net(x) - ref).abs().max())
    net.train(training)
    info = model_info(model)
    policy = Policy(
        ratios=ratios,
        source="transform",
        model=info.name if info else "",
        round_to=1,
        input_shape=tuple(input_shape),
        criterion="masked",
    )
    net.prunegym_policy = policy.to_dict()  # type: ignore[assignment]
    log.info(
        "transform: removed %d channels in %d groups (max abs diff %.3g)", sum(removed.values()), len(removed), final
    )
    return TransformResult(model=net, policy=policy, removed=removed, kept_constant=constant, max_abs_diff=final)
