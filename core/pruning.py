"""Structured channel pruning on Torch-Pruning's DependencyGraph: prunable groups, costs, and the pruner.

A *prunable group* is one Torch-Pruning group (channels coupled through residual additions, depthwise convs,
flatten, ...) rooted at the first conv/linear it contains in forward order, whose module name names the group.
One RL step acts on one group. Where we differ from Torch-Pruning:

- **Groups are verified numerically** (:func:`prunable_groups`). On a copy with seeded random weights, two of a
  group's channels are removed physically and, separately, their contributions are zeroed at every consumer;
  both must give the same outputs. Groups that fail are left out of the action space with an info log. This
  catches channel couplings TP cannot model: on the CIFAR ResNets' option-A ``PadShortcut`` (slice + zero
  padding of channels), TP 1.6.1 merges the stem and every residual channel of all three stages into one
  group (58 TP items on ResNet-20, 148 on ResNet-56) whose pruning breaks the forward pass; it is excluded,
  leaving the ``layerX.i.conv1`` groups (9 for ResNet-20, 27 for ResNet-56). Residual channels of the CIFAR
  ResNets are therefore not searched (a stage-by-stage custom rule could add them later). The output layer (last conv/linear executed) and grouped (non-depthwise) convs
  are excluded too. Results are cached per architecture and input shape.
- **Channel counts** come from one pure function, :func:`kept_channels`, used by the pruner and the cost model.
- **Costs** (:class:`CostTable`) predict MACs/params of any policy exactly, without pruning, for the env.
- Pruned models are saved as base architecture + :meth:`Policy.to_dict` (with ``round_to`` and ``input_shape``)
  + state_dict; :func:`apply_policy_structure` rebuilds the shapes without data.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from prunegym.core.importance import (
    Member,
    accumulate_gradients,
    channel_scores,
    check_criterion,
    is_depthwise,
    lowest,
    lsq_prune,
    split_calib,
)
from prunegym.core.models import model_info
from prunegym.core.policy import Policy, PolicyError
from prunegym.core.stats import model_stats

log = logging.getLogger(__name__)

_EPS = 1e-6
_VERIFY_CACHE: dict[tuple, dict[str, str | None]] = {}


def kept_channels(group: PrunableGroup | int, ratio: float, round_to: int = 1, *, name: str | None = None) -> int:
    """Channels a group keeps at ``ratio`` (Torch-Pruning semantics: ``floor(n * (1 - ratio))``).

    ``ratio == 0`` keeps all ``n``. With ``round_to > 1`` the count is rounded to the nearest multiple of
    ``round_to`` (ties up), never below ``round_to`` and never above ``n`` (then the largest multiple <= n, or
    ``n`` itself when ``n < round_to``). A ratio that leaves no channel before rounding raises ValueError
    naming the group (``name``, or the PrunableGroup's). Pure: the env's MAC estimates use it too.
    """
    n = group if isinstance(group, int) else group.out_channels
    name = name if name is not None or isinstance(group, int) else group.name
    label = f"group '{name}'" if name is not None else "group"
    if ratio <= 0.0:
        return n
    raw = math.floor(n * (1.0 - ratio) + _EPS)
    if raw < 1:
        raise PolicyError(
            f"ratio {ratio} leaves no channel of {label} ({n} channels); use a ratio below {1 - 1 / n:.4f}"
        )
    if round_to <= 1:
        return raw
    kept = max(round_to, round_to * math.floor(raw / round_to + 0.5))
    if kept > n:
        kept = round_to * (n // round_to) or n
    return kept


@dataclass(frozen=True)
class PrunableGroup:
    """One action of the search: a set of coupled channels, named after its root layer.

    ``in_channels``/``out_channels``/``stride``/``kernel``/``input_size`` describe the root layer (for a linear
    root: features, 1, 1, (1, 1)); ``out_channels`` is the group's channel count. ``macs``/``params`` are the
    root layer's; ``group_macs``/``group_params`` the full-width MACs/params of every conv/linear/norm layer
    whose input or output channels this group shrinks (the root, coupled producers such as a depthwise conv,
    and the consumers reading the channels), i.e. the cost this group's ratio scales. A layer read by one
    group and written by another counts in both. ``type`` is "linear", "dwconv" (the group contains a
    depthwise conv, e.g. MobileNetV2 expand + depthwise) or "conv".
    """

    name: str
    index: int
    type: str
    members: tuple[str, ...]
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    in_channels: int
    out_channels: int
    stride: int
    kernel: int
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    macs: int
    params: int
    group_macs: int
    group_params: int


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
    macs: int
    params: int

    def predict(self, ratios: Mapping[str, float], *, round_to: int = 1) -> tuple[int, int]:
        """``(macs, params)`` of the model pruned with ``ratios`` (group name -> ratio; other names ignored)."""
        kept = {g: kept_channels(n, ratios.get(g, 0.0), round_to, name=g) for g, n in self.channels.items()}

        def shrink(features: int, group: str, count: int) -> int:
            n = self.channels[group]
            return features - count * (n - kept[group]) // n

        macs, params = 0, self.fixed_params
        for la in self.layers:
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


# ----------------------------------------------------------------------------------------------- tracing


class _Traced:
    """A DependencyGraph on ``net`` with its verified groups; prunes ``net`` in place group by group."""

    def __init__(
        self, net: nn.Module, input_shape: tuple[int, int, int], *, verify: bool = True, log_level: int = logging.DEBUG
    ) -> None:
        self.net = net
        self.input_shape = tuple(int(s) for s in input_shape)
        self.names = {m: n for n, m in net.named_modules()}
        self.modules = dict(net.named_modules())
        self.order, self.in_sizes, self.out_sizes = _forward_order(net, self.input_shape)
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
        example = torch.randn(1, *self.input_shape, device=device)
        with torch.enable_grad():  # TP traces autograd; callers may hold torch.no_grad()
            self.dg = tp.DependencyGraph().build_dependency(net, example, verbose=False)
        convs = [n for n in self.order if isinstance(self.modules[n], nn.Conv2d | nn.Linear)]
        self.output_layer = convs[-1] if convs else None
        self.candidates: dict[str, list[Member]] = {}
        self.skipped: dict[str, str] = {}
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
        if verify:
            for name, reason in _verified(net, self.input_shape, list(self.candidates)).items():
                if reason is not None:
                    self.skipped[name] = reason
                    del self.candidates[name]
        for name, reason in self.skipped.items():
            log.log(log_level, "group '%s' left out of the action space: %s", name, reason)

    def _members(self, group: Any) -> list[Member]:
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

    def _root_group(self, root: str, idxs: Sequence[int]) -> Any:
        mod = self.modules[root]
        return self.dg.get_pruning_group(mod, self.dg.get_pruner_of_module(mod).prune_out_channels, list(idxs))

    def members(self, root: str) -> list[Member]:
        """The group's members with full indices, from the graph's current state."""
        return self._members(self._root_group(root, range(_out_channels(self.modules[root]))))

    def prune(self, root: str, idxs: Sequence[int]) -> None:
        if idxs:
            self._root_group(root, idxs).prune()


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on models carrying ``torch.nn.utils.prune`` reparametrizations (their
    computed ``weight`` is a non-leaf tensor, which deepcopy refuses; it is recomputed at the next forward)."""
    memo: dict[int, Any] = {}
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            name = getattr(hook, "_tensor_name", None)
            value = getattr(m, name, None) if isinstance(name, str) else None
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def _out_channels(m: nn.Module) -> int:
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


def _forward_order(
    net: nn.Module, input_shape: tuple[int, ...]
) -> tuple[list[str], dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Module names in first-call order, with the input and output shapes of each (batch dim dropped)."""
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


# ----------------------------------------------------------------------------------------------- verification


def _arch_key(net: nn.Module, input_shape: tuple[int, ...]) -> tuple:
    mods = tuple((n, type(m).__qualname__) for n, m in net.named_modules())
    shapes = tuple((k, tuple(v.shape)) for k, v in net.state_dict().items())
    return (type(net).__qualname__, mods, shapes, tuple(input_shape))


@torch.no_grad()
def _reinit(net: nn.Module, seed: int) -> None:
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


def _snapshot(objs: Iterable[Any]) -> list[tuple[Any, dict]]:
    return [(o, {k: (v.copy() if isinstance(v, dict) else v) for k, v in vars(o).items()}) for o in objs]


def _restore(snaps: list[tuple[Any, dict]]) -> None:
    for o, state in snaps:
        vars(o).clear()
        vars(o).update(state)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool((a - b).abs().max() <= 1e-4 * (1.0 + float(b.abs().max())))


def _verified(model: nn.Module, input_shape: tuple[int, ...], names: list[str]) -> dict[str, str | None]:
    """For each candidate group: None if pruning 2 channels equals zeroing them at the consumers, else why not."""
    key = _arch_key(model, input_shape)
    if key not in _VERIFY_CACHE:
        vm = copy_model(model).eval()
        _reinit(vm, seed=0)
        traced = _Traced(vm, input_shape, verify=False)
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
def _check_group(traced: _Traced, name: str, x: torch.Tensor) -> str | None:
    n = _out_channels(traced.modules[name])
    if n < 2:
        return "it has a single channel"
    # an asymmetric set: a channel-reversing op would map {0, n-1} onto itself and pass unnoticed
    chans = [0] if n <= 3 else [0, 1, n - 1]
    group = traced._root_group(name, chans)
    net = traced.net
    consumers = [m for m in traced._members(group) if m.role == "in"]
    saved = [(m.module, m.module.weight.detach().clone()) for m in consumers]
    try:
        for m in consumers:
            m.module.weight[:, list(m.idxs)] = 0.0
        masked = net(x)
    finally:
        for mod, w in saved:
            mod.weight.copy_(w)
    snaps = _snapshot(item.dep.target.module for item in group)
    try:
        group.prune(record_history=False)
        pruned = net(x)
    except Exception as exc:  # any failure means TP cannot prune this group correctly
        return (
            f"pruning it breaks the forward pass ({type(exc).__name__}: {str(exc).splitlines()[0][:100]}); its "
            f"{len(group)} coupled ops include one Torch-Pruning cannot model (e.g. a zero-padded shortcut)"
        )
    finally:
        _restore(snaps)
    if not _close(pruned, masked):
        if pruned.shape != masked.shape:
            return f"pruning it changes the output shape {tuple(masked.shape)} -> {tuple(pruned.shape)}"
        diff = float((pruned - masked).abs().max())
        return (
            f"removing 2 of its {n} channels differs from zeroing them (max diff {diff:.3g}): the channels are "
            "coupled through an op Torch-Pruning cannot model (e.g. a zero-padded shortcut)"
        )
    return None


# ----------------------------------------------------------------------------------------------- public API


def _groups_of(traced: _Traced) -> list[PrunableGroup]:
    stats = {la.name: la for la in model_stats(traced.net, input_shape=traced.input_shape).layers}
    params = {n: sum(p.numel() for p in m.parameters(recurse=False)) for n, m in traced.modules.items()}
    groups = []
    for index, (name, members) in enumerate(traced.candidates.items()):
        root = traced.modules[name]
        touched = list(dict.fromkeys(m.name for m in members))
        st = stats.get(name)
        conv = isinstance(root, nn.Conv2d)
        size_in = traced.in_sizes.get(name, ())
        size_out = traced.out_sizes.get(name, ())
        groups.append(
            PrunableGroup(
                name=name,
                index=index,
                type="linear" if not conv else ("dwconv" if any(is_depthwise(m.module) for m in members) else "conv"),
                members=tuple(sorted(touched, key=traced.order.index)),
                producers=tuple(dict.fromkeys(m.name for m in members if m.role == "out")),
                consumers=tuple(dict.fromkeys(m.name for m in members if m.role == "in")),
                in_channels=root.in_channels if conv else root.in_features,
                out_channels=_out_channels(root),
                stride=int(root.stride[0]) if conv else 1,
                kernel=int(root.kernel_size[0]) if conv else 1,
                input_size=tuple(int(s) for s in size_in[-2:]) if conv and len(size_in) >= 3 else (1, 1),
                output_size=tuple(int(s) for s in size_out[-2:]) if conv and len(size_out) >= 3 else (1, 1),
                macs=st.macs if st else 0,
                params=params[name],
                group_macs=sum(stats[t].macs for t in touched if t in stats),
                group_params=sum(params[t] for t in touched),
            )
        )
    return groups


def _table_of(traced: _Traced, groups: Sequence[PrunableGroup]) -> CostTable:
    stats = model_stats(traced.net, input_shape=traced.input_shape)
    out_of: dict[str, tuple[str, int]] = {}
    in_of: dict[str, dict[str, int]] = {}
    for g in groups:
        for m in traced.candidates[g.name]:
            if m.role == "out":
                out_of[m.name] = (g.name, len(m.idxs))
            else:
                in_of.setdefault(m.name, {})[g.name] = len(m.idxs)
    layers, tracked = [], 0
    by_name = {la.name: la for la in stats.layers}
    for name, mod in traced.modules.items():
        own = sum(p.numel() for p in mod.parameters(recurse=False))
        la = by_name.get(name)
        if la is not None:
            conv = isinstance(mod, nn.Conv2d)
            kk = la.kernel[0] * la.kernel[1] if conv else 1
            spatial = la.macs // max(1, la.out_channels * (la.in_channels // la.groups) * kk)
            layers.append(
                LayerCost(name, "conv" if conv else "linear", la.macs, own, la.out_channels, la.in_channels, kk,
                          spatial, getattr(mod, "bias", None) is not None, is_depthwise(mod), la.groups,
                          out_of.get(name), tuple(in_of.get(name, {}).items()))
            )  # fmt: skip
        elif own and name in out_of:
            kind = "norm" if isinstance(mod, nn.modules.batchnorm._BatchNorm) else "other"
            feats = out_of[name][1]
            layers.append(LayerCost(name, kind, 0, own, feats, feats, 0, 0, False, False, 1, out_of[name], ()))
        else:
            continue
        tracked += own
    channels = {g.name: g.out_channels for g in groups}
    return CostTable(tuple(layers), channels, stats.params - tracked, stats.macs, stats.params)


def _traced_copy(
    model: nn.Module, input_shape: tuple[int, int, int], *, log_level: int = logging.DEBUG
) -> tuple[nn.Module, _Traced]:
    net = copy_model(model)
    training = net.training
    net.eval()
    traced = _Traced(net, input_shape, log_level=log_level)
    net.train(training)
    return net, traced


def prunable_groups(model: nn.Module, *, input_shape: tuple[int, int, int]) -> list[PrunableGroup]:
    """The verified prunable groups of ``model`` in forward order (``index`` 0, 1, ...).

    Logs (INFO) each group left out of the action space and why.
    """
    _, traced = _traced_copy(model, input_shape, log_level=logging.INFO)
    return _groups_of(traced)


def cost_table(model: nn.Module, *, input_shape: tuple[int, int, int]) -> CostTable:
    """A :class:`CostTable` that predicts ``model_stats`` MACs/params of any policy on ``model``."""
    _, traced = _traced_copy(model, input_shape)
    return _table_of(traced, _groups_of(traced))


def _as_policy(policy: Policy | Mapping[str, Any]) -> Policy:
    if isinstance(policy, Policy):
        return policy
    if "ratios" in policy:
        return Policy.from_dict(policy)
    return Policy(ratios=dict(policy))


def prune_in_place(
    net: nn.Module,
    policy: Policy,
    *,
    input_shape: tuple[int, int, int],
    criterion: str = "l1",
    round_to: int = 1,
    calib: Iterable | None = None,
    original: nn.Module | None = None,
) -> dict[str, tuple[int, ...]]:
    """Prune ``net`` itself by ``policy``; return the removed channel indices per group.

    ``original`` (an unpruned copy, needed by ``lsq`` for its reconstruction targets) defaults to a copy of
    ``net``. Scores of all criteria but lsq are computed on the unpruned weights before any channel is removed.
    """
    check_criterion(criterion, calib)
    training = net.training
    net.eval()
    try:
        traced = _Traced(net, input_shape)
        names = list(traced.candidates)
        for key in policy.ratios:
            if key in traced.skipped and policy.ratio(key) > 0:
                raise PolicyError(
                    f"policy prunes group '{key}', which is not prunable ({traced.skipped[key]}); drop it"
                )
        policy.validate([*names, *traced.skipped])
        plan = []
        for name in names:
            n = _out_channels(traced.modules[name])
            keep = kept_channels(n, policy.ratio(name), round_to, name=name)
            if keep < n:
                plan.append((name, n, keep))
        if not plan:
            return {}
        batches = split_calib(calib) if calib is not None else []
        if criterion == "lsq":
            ref = original if original is not None else copy_model(net)
            ref_training = ref.training
            ref.eval()
            try:
                return lsq_prune(net, ref, plan=plan, members=traced.members, prune=traced.prune, batches=batches)
            finally:
                ref.train(ref_training)
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
    finally:
        net.train(training)


def apply_policy(
    model: nn.Module,
    policy: Policy | Mapping[str, Any],
    *,
    input_shape: tuple[int, int, int],
    criterion: str = "l1",
    round_to: int | None = None,
    calib: Iterable | None = None,
) -> nn.Module:
    """A pruned deep copy of ``model`` (the input is never modified; ``prunegym_info`` is kept).

    ``round_to`` defaults to the policy's; ``criterion`` is not read from the policy (its ``criterion`` field
    is a record). ``calib`` (an iterable of ``(x, y)`` batches, materialized once) is needed by "taylor" and
    "lsq". Applying a policy to an already pruned model records only that last step in ``prunegym_policy``; for
    iterative rounds use masked mode (:mod:`prunegym.core.masking`) and one final ``transform``. The copy carries ``prunegym_policy``: the :meth:`Policy.to_dict` record (with the
    effective ``round_to``, ``criterion`` and ``input_shape``) to pass to ``checkpoint.save_model(policy=...)``.
    """
    pol = _as_policy(policy)
    rt = pol.round_to if round_to is None else int(round_to)
    net = copy_model(model)
    prune_in_place(net, pol, input_shape=input_shape, criterion=criterion, round_to=rt, calib=calib, original=model)
    info = model_info(model)
    pol = replace(pol, round_to=rt, criterion=criterion, input_shape=tuple(input_shape),
                  model=pol.model or (info.name if info else ""))  # fmt: skip
    net.prunegym_policy = pol.to_dict()  # type: ignore[assignment]
    return net


def apply_policy_structure(model: nn.Module, policy_dict: Mapping[str, Any]) -> nn.Module:
    """Prune ``model`` (a freshly built base model) to the shapes of a saved policy record, without data.

    Channels are chosen by l1 on whatever weights ``model`` holds; the caller loads the saved state_dict next.
    ``policy_dict`` is :meth:`Policy.to_dict` output; its ``input_shape`` is required for models whose shapes
    depend on the input size (flatten + linear), else the model's ``in_channels`` at 32x32 is assumed.
    """
    pol = _as_policy(policy_dict)
    shape = pol.input_shape
    if shape is None:
        info = model_info(model)
        shape = (info.in_channels if info else 3, 32, 32)
        log.warning("policy record has no input_shape; rebuilding with %s", shape)
    net = copy_model(model)
    prune_in_place(net, pol, input_shape=shape, criterion="l1", round_to=pol.round_to)
    net.prunegym_policy = replace(pol, input_shape=shape).to_dict()  # type: ignore[assignment]
    return net


def uniform_ratio_for_macs(
    model: nn.Module, *, input_shape: tuple[int, int, int], target_macs_fraction: float, round_to: int = 1
) -> float:
    """The smallest uniform ratio (over all prunable groups) whose pruned model has at most
    ``target_macs_fraction`` of the original MACs, by bisection on the exact :class:`CostTable` (checked
    against ``model_stats`` of :func:`apply_policy_structure` at the end). Raises ValueError if unreachable.
    """
    if not 0.0 < target_macs_fraction <= 1.0:
        raise PolicyError(f"target_macs_fraction {target_macs_fraction} is outside (0, 1]; e.g. 0.5 for half the MACs")
    table = cost_table(model, input_shape=input_shape)
    target = target_macs_fraction * table.macs
    if not table.channels:
        raise PolicyError("the model has no prunable groups; nothing can reach a MAC target")

    def macs(r: float) -> int:
        return table.predict(dict.fromkeys(table.channels, r), round_to=round_to)[0]

    hi = min((n - 1) / n for n in table.channels.values() if n > 1) - _EPS
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
