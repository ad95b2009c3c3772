"""Fine-grained (unstructured) magnitude pruning: per-weight masks, the AGP schedule, masks kept through training.

Han et al. 2015 prune the smallest weights and retrain with the pruned ones held at zero; Zhu & Gupta 2017 (AGP)
raise the sparsity over ``n`` steps as ``s_t = s_f + (s_i − s_f)·(1 − t/n)³``, fast first, slowly at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
from torch import nn

from prunegym.core.models import PadShortcutConv

__all__ = [
    "MaskKeeper",
    "agp_sparsity",
    "apply_masks",
    "magnitude_masks",
    "prunable_weights",
    "sparsity_of",
]

log = logging.getLogger(__name__)

SCOPES = ("global", "layer", "sigma")


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight of every Conv2d and Linear layer, by state_dict name (rewritten padded shortcuts excluded)."""
    return {
        f"{name}.weight": m.weight
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and not isinstance(m, PadShortcutConv)
    }


def agp_sparsity(step: int, *, steps: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's automated gradual pruning: the sparsity after ``step`` of ``steps`` (``step = steps``: final).

    Args:
        step: the pruning step, 1 … steps.
        steps: the number of pruning steps.
        final: the sparsity to reach.
        initial: the sparsity before the first step.

    Returns:
        The target sparsity of that step.
    """
    t = min(max(step, 0), steps) / steps
    return final + (initial - final) * (1.0 - t) ** 3


def _sigma(w: torch.Tensor) -> float:
    """The standard deviation of a tensor's weights (1 for a constant or one-element tensor)."""
    sd = float(w.detach().std()) if w.numel() > 1 else 0.0
    return sd if sd > 0 else 1.0


@torch.no_grad()
def magnitude_masks(weights: Mapping[str, torch.Tensor], *, sparsity: float, scope: str = "global") -> dict:
    """Masks (1 = kept) removing the ``sparsity`` fraction of smallest-magnitude weights.

    Args:
        weights: the tensors to prune, by name.
        sparsity: fraction to remove, in [0, 1).
        scope: ``global`` (one threshold over all tensors), ``layer`` (the same fraction of each tensor) or
            ``sigma`` (Han et al.'s per-layer threshold ``q·σ_layer``, with the one quality ``q`` that reaches
            ``sparsity`` overall: a global threshold on ``|w| / σ_layer``).

    Returns:
        name → float mask of the tensor's shape.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")

    def keep_top(values: torch.Tensor) -> float:
        k = round(sparsity * values.numel())  # how many to remove
        return float(values.kthvalue(k).values) if k > 0 else -1.0

    if scope in ("global", "sigma"):
        scale = {n: _sigma(w) if scope == "sigma" else 1.0 for n, w in weights.items()}
        threshold = keep_top(torch.cat([w.detach().abs().flatten() / scale[n] for n, w in weights.items()]))
        return {n: (w.detach().abs() / scale[n] > threshold).float() for n, w in weights.items()}
    return {n: (w.detach().abs() > keep_top(w.detach().abs().flatten())).float() for n, w in weights.items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the masked-out weights of ``model`` in place."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device))


def sparsity_of(model: nn.Module) -> float:
    """Fraction of the prunable weights that are exactly zero."""
    ws = list(prunable_weights(model).values())
    return sum(int((w == 0).sum()) for w in ws) / max(1, sum(w.numel() for w in ws))


class MaskKeeper:
    """Keeps pruned weights at zero while a model trains: their gradients are masked (so momentum never builds up
    for them) and, after every optimizer step, the weights are masked again (weight decay and momentum cannot
    revive them). Pass :meth:`after_step` as :func:`prunegym.core.train.train`'s ``after_step``.

    Args:
        model: the model being trained.
        masks: state_dict name → mask (1 = kept).
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
        params = dict(model.named_parameters())
        unknown = [n for n in masks if n not in params]
        if unknown:
            raise ValueError(f"masks for parameters the model lacks: {', '.join(unknown[:3])}")
        self._pairs = [(params[n], m) for n, m in masks.items()]
        self._hooks = [p.register_hook(self._grad_hook(m)) for p, m in self._pairs]

    @staticmethod
    def _grad_hook(mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda grad: grad * mask.to(grad.device)

    @torch.no_grad()
    def after_step(self) -> None:
        """Re-apply the masks (call after each optimizer step)."""
        for p, m in self._pairs:
            p.mul_(m.to(p.device))

    def remove(self) -> None:
        """Remove the gradient hooks."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
