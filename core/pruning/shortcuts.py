"""Exact rewrites that let Torch-Pruning prune the residual stream of padded-shortcut ResNets.

The CIFAR ResNets' option-A shortcut (:class:`~prunegym.core.models.PadShortcut`: ``F.pad(x[:, :, ::2, ::2])``)
has no parameters, and Torch-Pruning 1.6.1 has no handler for a channel pad: its element-wise fallback keeps
channel indices 1:1, so it couples the stem and every residual channel of all three stages into one group whose
pruning breaks the forward pass. :func:`rewrite_pad_shortcuts` replaces each such shortcut by the frozen 1×1,
stride-2 convolution that computes exactly the same thing (weight ``W[pad + i, i] = 1``, zeros elsewhere).
Torch-Pruning then handles it like an option-B projection shortcut: each stage's residual channels become one
group of their own (rooted at the stem for stage 1, at the stage's first ``conv2`` after it), and a pruned
shortcut is still an exact channel scatter (a kept input channel maps to its kept output channel, every other
output channel is zero).

The frozen weights never train (``requires_grad`` is off, so SGD and weight decay skip them), and
``prunegym stat`` counts the rewritten shortcut as it counts the padded one: no MACs, no parameters.
"""

from __future__ import annotations

import logging

from torch import nn

from prunegym.core.models import PadShortcut, PadShortcutConv

__all__ = ["PadShortcutConv", "has_pad_shortcuts", "rewrite_pad_shortcuts"]

log = logging.getLogger(__name__)


def has_pad_shortcuts(model: nn.Module) -> bool:
    """Whether ``model`` holds an option-A :class:`PadShortcut` that :func:`rewrite_pad_shortcuts` would replace."""
    return any(isinstance(m, PadShortcut) for m in model.modules())


def _input_channels(parent: nn.Module) -> int:
    conv1 = getattr(parent, "conv1", None)
    if not isinstance(conv1, nn.Conv2d):
        raise TypeError(f"{type(parent).__name__} holds a PadShortcut but no conv1 to read its input width from")
    return conv1.in_channels


def rewrite_pad_shortcuts(model: nn.Module) -> int:
    """Replace every ``PadShortcut`` of ``model`` in place by the equal :class:`PadShortcutConv`.

    The block that owns the shortcut must read its input with a ``conv1`` (as the zoo's ``BasicBlock`` does),
    which gives the shortcut's input width. The new convolutions take the device and dtype of ``conv1``.

    Args:
        model: the model, changed in place.

    Returns:
        How many shortcuts were replaced.
    """
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, PadShortcut):
                continue
            conv1 = parent.conv1 if isinstance(getattr(parent, "conv1", None), nn.Conv2d) else None
            conv = PadShortcutConv(_input_channels(parent), child.pad)
            if conv1 is not None:
                conv = conv.to(device=conv1.weight.device, dtype=conv1.weight.dtype)
            setattr(parent, name, conv)
            count += 1
    if count:
        log.debug("rewrote %d padded shortcut(s) into frozen 1x1 convolutions", count)
    return count
