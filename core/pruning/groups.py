"""Prunable groups: what one step of the search acts on, and the kept-channel arithmetic.

A *prunable group* is one Torch-Pruning group (channels coupled through residual additions, depthwise convs,
flatten, ...) rooted at the first conv/linear it contains in forward order, whose module name names the group.
Groups are verified numerically (:mod:`prunegym.core.pruning.trace`): on the CIFAR ResNets' option-A
``PadShortcut`` (slice + zero padding of channels), TP 1.6.1 merges the stem and every residual channel of all
three stages into one group (58 TP items on ResNet-20, 148 on ResNet-56) whose pruning breaks the forward pass;
so the padded shortcuts are first rewritten into their exact 1×1 convolutions (:mod:`.shortcuts`), after which
each stage's residual channels are one group (``conv1``, ``layer2.0.conv2``, ``layer3.0.conv2``) beside the
``layerX.i.conv1`` groups: 12 groups for ResNet-20, 30 for ResNet-56. The output layer (last conv/linear
executed) and grouped (non-depthwise) convs are excluded.

Channel counts come from one pure function, :func:`kept_channels`, used by the pruner and the cost model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from torch import nn

from prunegym.core.policy import PolicyError
from prunegym.core.pruning.importance import is_depthwise
from prunegym.core.pruning.shortcuts import rewrite_pad_shortcuts
from prunegym.core.pruning.trace import Traced, copy_model, out_channels
from prunegym.core.stats import model_stats

RATIO_EPS = 1e-6  # slack of floor(n * (1 - ratio)) against float error in ratios such as 1 - k/n


def kept_channels(group: PrunableGroup | int, ratio: float, round_to: int = 1, *, name: str | None = None) -> int:
    """Channels a group keeps at ``ratio`` (Torch-Pruning semantics: ``floor(n * (1 - ratio))``).

    ``ratio == 0`` keeps all ``n``. With ``round_to > 1`` the count is rounded to the nearest multiple of
    ``round_to`` (ties up), never below ``round_to`` and never above ``n`` (then the largest multiple <= n, or
    ``n`` itself when ``n < round_to``). Pure: the env's MAC estimates use it too.

    Args:
        group: a :class:`PrunableGroup` or its channel count ``n``.
        ratio: the fraction of the channels to remove.
        round_to: round the kept count to this multiple.
        name: the group's name for the error message (default: the PrunableGroup's).

    Returns:
        The number of channels kept.

    Raises:
        PolicyError: the ratio leaves no channel before rounding (the message names the group).
    """
    n = group if isinstance(group, int) else group.out_channels
    name = name if name is not None or isinstance(group, int) else group.name
    label = f"group '{name}'" if name is not None else "group"
    if ratio <= 0.0:
        return n
    raw = math.floor(n * (1.0 - ratio) + RATIO_EPS)
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


def traced_copy(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    *,
    log_level: int = logging.DEBUG,
    residual_stream: bool = True,
) -> tuple[nn.Module, Traced]:
    """A copy of ``model`` and its :class:`Traced` graph (traced in eval mode; the copy keeps the train flag).

    Args:
        model: the model (not modified).
        input_shape: ``(C, H, W)`` of one input.
        log_level: level of the log line naming each group left out of the action space.
        residual_stream: rewrite option-A padded shortcuts into their exact 1×1 convolutions first
            (:mod:`.shortcuts`), so each stage's residual channels form a prunable group.

    Returns:
        ``(copy, traced)``.
    """
    net = copy_model(model)
    if residual_stream:
        rewrite_pad_shortcuts(net)
    training = net.training
    net.eval()
    traced = Traced(net, input_shape, log_level=log_level)
    net.train(training)
    return net, traced


def groups_of(traced: Traced) -> list[PrunableGroup]:
    """The :class:`PrunableGroup` of each verified candidate of ``traced``, in forward order.

    Args:
        traced: a traced model.

    Returns:
        The groups, ``index`` 0, 1, ...
    """
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
                out_channels=out_channels(root),
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


def prunable_groups(
    model: nn.Module, *, input_shape: tuple[int, int, int], residual_stream: bool = True
) -> list[PrunableGroup]:
    """The verified prunable groups of ``model`` in forward order (``index`` 0, 1, ...).

    Logs (INFO) each group left out of the action space and why.

    Args:
        model: the model (not modified).
        input_shape: ``(C, H, W)`` of one input.
        residual_stream: include the residual-stream groups of padded-shortcut ResNets (see :func:`traced_copy`).

    Returns:
        The groups.
    """
    _, traced = traced_copy(model, input_shape, log_level=logging.INFO, residual_stream=residual_stream)
    return groups_of(traced)
