"""Depth pruning: residual blocks whose shortcut is an identity can be removed outright.

Removing a block is exact when its branch is zero: for the zoo's ``BasicBlock`` (``relu(branch(x) + x)``, its
input the output of a ReLU, so ``relu(x) = x``) and ``InvertedResidual`` with a residual (``x + branch(x)``),
the block then is the identity. :func:`remove_blocks` replaces such blocks by :class:`RemovedBlock` (an
``nn.Identity``), so ONNX export, ``stat`` and the bundle see a shallower network. On channel-blocked CPU
kernels removing a block turns MACs into speed almost one for one (BENCHMARKS.md), where channel pruning does
not.

A policy names removed blocks by module name (``layer1.3``); each removable block has one *inner group* (the
channel group rooted inside it, ``layer1.3.conv1``), whose action decides the block's width or its removal.
Blocks of other models cannot be removed yet: naming one is an error that lists the removable blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

from prunegym.core.models import BasicBlock, InvertedResidual
from prunegym.core.policy import PolicyError

__all__ = ["RemovedBlock", "block_groups", "inner_group_of", "inside", "removable_blocks", "remove_blocks"]


class RemovedBlock(nn.Identity):
    """A residual block removed by depth pruning (its output is its input)."""


def _is_removable(module: nn.Module) -> bool:
    if isinstance(module, BasicBlock):
        return isinstance(module.shortcut, nn.Identity)
    if isinstance(module, InvertedResidual):
        return bool(module.use_residual)
    return False


def removable_blocks(model: nn.Module) -> list[str]:
    """Module names of the blocks of ``model`` that :func:`remove_blocks` can remove, in module order."""
    return [name for name, m in model.named_modules() if name and _is_removable(m)]


def inside(name: str, blocks: Iterable[str]) -> bool:
    """Whether module ``name`` is one of ``blocks`` or lies inside one."""
    return any(name == b or name.startswith(b + ".") for b in blocks)


def inner_group_of(block: str, group_names: Sequence[str]) -> str | None:
    """The first group rooted inside ``block`` (its inner group), or ``None``."""
    return next((g for g in group_names if inside(g, (block,))), None)


def block_groups(model: nn.Module, group_names: Sequence[str]) -> dict[str, str]:
    """Removable block → its inner group, for each removable block of ``model`` whose inner group is one of
    ``group_names`` (in module order)."""
    out = {}
    for block in removable_blocks(model):
        group = inner_group_of(block, group_names)
        if group is not None:
            out[block] = group
    return out


def remove_blocks(net: nn.Module, blocks: Iterable[str]) -> None:
    """Replace each named block of ``net`` by a :class:`RemovedBlock`, in place.

    Args:
        net: the model, changed in place.
        blocks: module names of removable blocks (:func:`removable_blocks`).

    Raises:
        PolicyError: a name that is not a removable block of ``net`` (the message lists the removable ones).
    """
    blocks = list(blocks)
    if not blocks:
        return
    allowed = removable_blocks(net)
    for name in blocks:
        if name not in allowed:
            listed = ", ".join(allowed[:6]) + (" ..." if len(allowed) > 6 else "") if allowed else "none"
            raise PolicyError(
                f"policy removes block '{name}', which is not a removable residual block of this model "
                f"(one with an identity shortcut); removable blocks: {listed}"
            )
    for name in blocks:
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, RemovedBlock())
