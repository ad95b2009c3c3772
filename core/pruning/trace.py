"""Tracing a model with Torch-Pruning's DependencyGraph, and the numerical check of every candidate group.

A candidate group is one Torch-Pruning group rooted at the first conv/linear it contains in forward order. It
is kept only if it passes :func:`verified`: on a copy with seeded random weights, a few of its channels are
removed physically and, separately, their contributions are zeroed at every consumer; both must give the same
outputs. This catches channel couplings Torch-Pruning cannot model (the CIFAR ResNets' option-A zero-padded
shortcut). Results are cached per architecture and input shape.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from prunegym.core.pruning.importance import Member, is_depthwise

log = logging.getLogger(__name__)

_VERIFY_CACHE: dict[tuple, dict[str, str | None]] = {}
_CANDIDATES_CACHE: dict[tuple, frozenset[str]] = {}


class Traced:
    """A DependencyGraph on ``net`` with its verified groups; prunes ``net`` in place group by group.

    Args:
        net: the model to trace (kept, not copied; put it in eval mode first).
        input_shape: ``(C, H, W)`` of one input.
        verify: check every candidate group numerically (:func:`verified`) and drop those that fail.
        log_level: level of the log line naming each group left out and why.
    """

    def __init__(
        self, net: nn.Module, input_shape: tuple[int, int, int], *, verify: bool = True, log_level: int = logging.DEBUG
    ) -> None:
        self.net = net
        self.input_shape = tuple(int(s) for s in input_shape)
        self.names = {m: n for n, m in net.named_modules()}
        self.modules = dict(net.named_modules())
        self.order, self.in_sizes, self.out_sizes = forward_order(net, self.input_shape)
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
        example = torch.randn(1, *self.input_shape, device=device)
        with torch.enable_grad():  # TP traces autograd; callers may hold torch.no_grad()
            self.dg = tp.DependencyGraph().build_dependency(net, example, verbose=False)
        convs = [n for n in self.order if isinstance(self.modules[n], nn.Conv2d | nn.Linear)]
        self.output_layer = convs[-1] if convs else None
        self.candidates: dict[str, list[Member]] = {}
        self.skipped: dict[str, str] = {}
        self._collect_candidates()
        if verify:
            for name, reason in verified(net, self.input_shape, list(self.candidates)).items():
                if reason is not None:
                    self.skipped[name] = reason
                    del self.candidates[name]
        for name, reason in self.skipped.items():
            log.log(log_level, "group '%s' left out of the action space: %s", name, reason)

    def _collect_candidates(self) -> None:
        """Fill ``candidates`` (forward order) and ``skipped`` from the graph's groups, output layer excluded."""
        ignored = [self.modules[self.output_layer]] if self.output_layer else []
        for g in self.dg.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
            members = self._members(g)
            roots = [m.name for m in members if m.role == "out" and isinstance(m.module, nn.Conv2d | nn.Linear)]
            if not roots:
                continue
            root = min(roots, key=self.order.index)
            grouped = [m.name for m in members if isinstance(m.module, nn.Conv2d) and m.module.groups > 1]
            grouped = [n for n in grouped if not is_depthwise(self.modules[n])]
            if grouped:
                self.skipped[root] = f"contains grouped conv '{grouped[0]}', which this pruner does not support"
            else:
                self.candidates[root] = self.members(root)
        self.candidates = dict(sorted(self.candidates.items(), key=lambda kv: self.order.index(kv[0])))

    def _members(self, group: Any) -> list[Member]:
        """The named conv/linear/norm modules of a Torch-Pruning group, as producers ("out") or consumers ("in")."""
        out: list[Member] = []
        for item in group:
            dep, idxs = item.dep, item.idxs
            mod = dep.target.module
            name = self.names.get(mod)
            if name is None:  # TP's placeholder ops (elementwise, reshape, concat)
                continue
            if is_depthwise(mod) or self.dg.is_out_channel_pruning_fn(dep.handler):
                role = "out"
            elif self.dg.is_in_channel_pruning_fn(dep.handler):
                role = "in"
            else:
                continue
            out.append(Member(name, mod, role, tuple(int(i) for i in idxs), tuple(int(i) for i in item.root_idxs)))
        return out

    def root_group(self, root: str, idxs: Sequence[int]) -> Any:
        """The Torch-Pruning group that removes output channels ``idxs`` of layer ``root``."""
        mod = self.modules[root]
        return self.dg.get_pruning_group(mod, self.dg.get_pruner_of_module(mod).prune_out_channels, list(idxs))

    def members(self, root: str) -> list[Member]:
        """The group's members with full indices, from the graph's current state."""
        return self._members(self.root_group(root, range(out_channels(self.modules[root]))))

    def prune(self, root: str, idxs: Sequence[int]) -> None:
        """Remove output channels ``idxs`` of group ``root`` (and everything coupled to them) from the net."""
        if idxs:
            self.root_group(root, idxs).prune()


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on models carrying ``torch.nn.utils.prune`` reparametrizations.

    Their computed ``weight`` is a non-leaf tensor, which deepcopy refuses; it is recomputed at the next forward.

    Args:
        model: the model to copy.

    Returns:
        An independent copy.
    """
    memo: dict[int, Any] = {}
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            name = getattr(hook, "_tensor_name", None)
            value = getattr(m, name, None) if isinstance(name, str) else None
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def out_channels(m: nn.Module) -> int:
    """Output channels of a Conv2d, output features of a Linear."""
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


def forward_order(
    net: nn.Module, input_shape: tuple[int, ...]
) -> tuple[list[str], dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Leaf module names in first-call order, with the input and output shapes of each (batch dim dropped).

    Args:
        net: the model; run once on a zero input.
        input_shape: ``(C, H, W)`` of one input.

    Returns:
        ``(names, input shapes, output shapes)``.
    """
    order: list[str] = []
    ins: dict[str, tuple[int, ...]] = {}
    outs: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, m in net.named_modules():
        if name and not list(m.children()):

            def hook(_m: nn.Module, inp: tuple, out: Any, name: str = name) -> None:
                if name not in ins:
                    order.append(name)
                    ins[name] = tuple(inp[0].shape[1:]) if inp and isinstance(inp[0], torch.Tensor) else ()
                    outs[name] = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()

            handles.append(m.register_forward_hook(hook))
    try:
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
        with torch.no_grad():
            net(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
    return order, ins, outs


def snapshot(objs: Iterable[Any]) -> list[tuple[Any, dict]]:
    """The attributes of each object (one level of dicts copied), for :func:`restore` to undo a prune."""
    return [(o, {k: (v.copy() if isinstance(v, dict) else v) for k, v in vars(o).items()}) for o in objs]


def restore(snaps: list[tuple[Any, dict]]) -> None:
    """Put back the attributes saved by :func:`snapshot`."""
    for o, state in snaps:
        vars(o).clear()
        vars(o).update(state)


# ----------------------------------------------------------------------------------------------- verification


def _arch_key(net: nn.Module, input_shape: tuple[int, ...]) -> tuple:
    """The verification cache key: module names and types, state_dict shapes, input shape."""
    mods = tuple((n, type(m).__qualname__) for n, m in net.named_modules())
    shapes = tuple((k, tuple(v.shape)) for k, v in net.state_dict().items())
    return (type(net).__qualname__, mods, shapes, tuple(input_shape))


def candidate_names(net: nn.Module, input_shape: tuple[int, ...]) -> frozenset[str]:
    """The verified candidate groups of ``net`` as it is, cached per architecture (a trace costs ~0.1–0.2 s)."""
    key = _arch_key(net, input_shape)
    if key not in _CANDIDATES_CACHE:
        probe = copy_model(net).eval()
        if len(_CANDIDATES_CACHE) > 32:
            _CANDIDATES_CACHE.clear()
        _CANDIDATES_CACHE[key] = frozenset(Traced(probe, tuple(input_shape)).candidates)
    return _CANDIDATES_CACHE[key]


@torch.no_grad()
def _reinit(net: nn.Module, seed: int) -> None:
    """Seeded random weights and BatchNorm statistics, so that no channel is accidentally dead."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight[0].numel()))
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and equal up to 1e-4 relative to ``b``'s scale."""
    return a.shape == b.shape and bool((a - b).abs().max() <= 1e-4 * (1.0 + float(b.abs().max())))


def verified(model: nn.Module, input_shape: tuple[int, ...], names: list[str]) -> dict[str, str | None]:
    """For each candidate group: None if pruning 2 channels equals zeroing them at the consumers, else why not.

    Args:
        model: the model (not modified: a copy with seeded random weights is checked).
        input_shape: ``(C, H, W)`` of one input.
        names: the candidate groups' root layer names.

    Returns:
        ``{name: None or the reason the group is left out}``.
    """
    key = _arch_key(model, input_shape)
    if key not in _VERIFY_CACHE:
        vm = copy_model(model).eval()
        _reinit(vm, seed=0)
        traced = Traced(vm, input_shape, verify=False)
        x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
        x = x.to(next(vm.parameters()).device)
        result: dict[str, str | None] = {}
        for name in traced.candidates:
            result[name] = _check_group(traced, name, x)
        if len(_VERIFY_CACHE) > 32:
            _VERIFY_CACHE.clear()
        _VERIFY_CACHE[key] = result
    result = _VERIFY_CACHE[key]
    return {n: result.get(n, "not found when re-tracing the model") for n in names}


@torch.no_grad()
def _masked_output(traced: Traced, group: Any, x: torch.Tensor) -> torch.Tensor:
    """The net's output with the group's channels zeroed at every consumer (weights restored afterwards)."""
    consumers = [m for m in traced._members(group) if m.role == "in"]
    saved = [(m.module, m.module.weight.detach().clone()) for m in consumers]
    try:
        for m in consumers:
            m.module.weight[:, list(m.idxs)] = 0.0
        return traced.net(x)
    finally:
        for mod, w in saved:
            mod.weight.copy_(w)


@torch.no_grad()
def _check_group(traced: Traced, name: str, x: torch.Tensor) -> str | None:
    """None if removing a few channels of group ``name`` equals zeroing them at the consumers, else why not."""
    n = out_channels(traced.modules[name])
    if n < 2:
        return "it has a single channel"
    # an asymmetric set: a channel-reversing op would map {0, n-1} onto itself and pass unnoticed
    chans = [0] if n <= 3 else [0, 1, n - 1]
    group = traced.root_group(name, chans)
    masked = _masked_output(traced, group, x)
    snaps = snapshot(item.dep.target.module for item in group)
    try:
        group.prune(record_history=False)
        pruned = traced.net(x)
    except Exception as exc:  # any failure means TP cannot prune this group correctly
        return (
            f"pruning it breaks the forward pass ({type(exc).__name__}: {str(exc).splitlines()[0][:100]}); its "
            f"{len(group)} coupled ops include one Torch-Pruning cannot model (e.g. a zero-padded shortcut)"
        )
    finally:
        restore(snaps)
    if not _close(pruned, masked):
        if pruned.shape != masked.shape:
            return f"pruning it changes the output shape {tuple(masked.shape)} -> {tuple(pruned.shape)}"
        diff = float((pruned - masked).abs().max())
        return (
            f"removing 2 of its {n} channels differs from zeroing them (max diff {diff:.3g}): the channels are "
            "coupled through an op Torch-Pruning cannot model (e.g. a zero-padded shortcut)"
        )
    return None
