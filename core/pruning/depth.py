"""Depth pruning: residual blocks whose shortcut is an identity can be removed outright.

Removing a block is exact when its branch is zero: for the zoo's ``BasicBlock`` (``relu(branch(x) + x)``, its
input the output of a ReLU, so ``relu(x) = x``) and ``InvertedResidual`` with a residual (``x + branch(x)``),
the block then is the identity. :func:`remove_blocks` replaces such blocks by :class:`RemovedBlock` (an
``nn.Identity``), so ONNX export, ``stat`` and the bundle see a shallower network. On channel-blocked CPU
kernels removing a block turns MACs into speed almost one for one (BENCHMARKS.md), where channel pruning does
not.

Blocks of other (bring-your-own) models are found by tracing each submodule with ``torch.fx``: a module whose
forward is ``x + branch(x)`` (its one input added, unchanged, to a branch with parameters) is removed to the
identity; one whose forward is ``relu(x + branch(x))`` to a ReLU (:class:`RemovedReluBlock`), which is exact
whatever the sign of ``x``. A module that does not trace, or that adds a transformed shortcut, is not removable.
A removable block inside another one is kept and the outer one is not (each block owns one inner group).

A policy names removed blocks by module name (``layer1.3``); each removable block has one *inner group* (the
channel group rooted inside it, ``layer1.3.conv1``), whose action decides the block's width or its removal.
Naming any other module is an error that lists the removable blocks.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from prunegym.core.models import BasicBlock, InvertedResidual
from prunegym.core.policy import PolicyError

__all__ = [
    "RemovedBlock",
    "RemovedReluBlock",
    "block_groups",
    "inner_group_of",
    "inside",
    "removable_blocks",
    "remove_blocks",
    "residual_kind",
]

log = logging.getLogger(__name__)

_ADDS = (operator.add, operator.iadd, torch.add)
_RELU_FUNCTIONS = (torch.relu, F.relu, torch.relu_)


class RemovedBlock(nn.Identity):
    """A residual block removed by depth pruning (its output is its input)."""


class RemovedReluBlock(RemovedBlock):
    """A removed ``relu(x + branch(x))`` block of a bring-your-own model: its output is ``relu(x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def _is_relu(node: fx.Node, traced: fx.GraphModule) -> bool:
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    if node.op == "call_method":
        return node.target in ("relu", "relu_")
    if node.op == "call_module":
        return isinstance(traced.get_submodule(str(node.target)), nn.ReLU)
    return False


def _is_add(node: fx.Node) -> bool:
    plain = not node.kwargs and len(node.args) == 2
    if node.op == "call_function":
        return plain and node.target in _ADDS
    return node.op == "call_method" and node.target in ("add", "add_") and plain


def _has_parameters(node: fx.Node, traced: fx.GraphModule, x: fx.Node) -> bool:
    """Whether the branch ending at ``node`` depends on ``x`` through a module with parameters."""
    seen, todo, param, reaches = set(), [node], False, False
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n is x:
            reaches = True
            continue
        if n.op == "call_module" and any(True for _ in traced.get_submodule(str(n.target)).parameters()):
            param = True
        todo.extend(a for a in n.all_input_nodes)
    return param and reaches


def _traced_kind(module: nn.Module) -> str | None:
    try:
        traced = fx.symbolic_trace(module)
    except Exception as exc:  # anything fx cannot trace is simply not a removable block
        log.debug("%s does not trace (%s): not a removable block", type(module).__name__, exc)
        return None
    inputs = [n for n in traced.graph.nodes if n.op == "placeholder"]
    out = next(n for n in traced.graph.nodes if n.op == "output").args[0]
    if len(inputs) != 1 or not isinstance(out, fx.Node):
        return None
    relu = _is_relu(out, traced)
    add = out.all_input_nodes[0] if relu and len(out.all_input_nodes) == 1 else out
    if not _is_add(add) or not all(isinstance(a, fx.Node) for a in add.args):
        return None
    x = inputs[0]
    a, b = add.args
    if (a is x) == (b is x):
        return None
    branch = b if a is x else a
    if not _has_parameters(branch, traced, x):
        return None
    return "relu" if relu else "identity"


def residual_kind(module: nn.Module) -> str | None:
    """How :func:`remove_blocks` removes ``module``: ``identity``, ``relu`` (a ``relu(x + branch(x))`` block of a
    bring-your-own model), or ``None`` when it is not a removable residual block.

    The zoo's blocks are known (a ``BasicBlock`` with an identity shortcut, whose input is a ReLU's output, is
    removed to the identity; an ``InvertedResidual`` with a residual); other modules with children are traced.
    """
    if isinstance(module, BasicBlock):
        return "identity" if isinstance(module.shortcut, nn.Identity) else None
    if isinstance(module, InvertedResidual):
        return "identity" if module.use_residual else None
    if isinstance(module, RemovedBlock) or type(module).__module__.startswith("torch.") or not any(module.children()):
        return None
    return _traced_kind(module)


def _kinds(model: nn.Module) -> dict[str, str]:
    found = {name: kind for name, m in model.named_modules() if name and (kind := residual_kind(m)) is not None}
    return {name: kind for name, kind in found.items() if not any(o != name and inside(o, (name,)) for o in found)}


def removable_blocks(model: nn.Module) -> list[str]:
    """Module names of the blocks of ``model`` that :func:`remove_blocks` can remove, in module order."""
    return list(_kinds(model))


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
    kinds = _kinds(net)
    allowed = list(kinds)
    for name in blocks:
        if name not in kinds:
            listed = ", ".join(allowed[:6]) + (" ..." if len(allowed) > 6 else "") if allowed else "none"
            raise PolicyError(
                f"policy removes block '{name}', which is not a removable residual block of this model "
                f"(x + branch(x) or relu(x + branch(x)) with an identity shortcut); removable blocks: {listed}"
            )
    for name in blocks:
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, RemovedReluBlock() if kinds[name] == "relu" else RemovedBlock())
