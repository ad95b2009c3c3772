"""Residual-stream pruning of the padded-shortcut (option-A) CIFAR ResNets, proved numerically."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zoo_helpers import calibrated

from prunegym.core.models import PadShortcut, build_model
from prunegym.core.policy import Policy
from prunegym.core.pruning import apply_policy, prunable_groups, prune_in_place
from prunegym.core.pruning.shortcuts import PadShortcutConv, rewrite_pad_shortcuts
from prunegym.core.pruning.trace import Traced, copy_model

SHAPE = (3, 32, 32)
STREAM = ("conv1", "layer2.0.conv2", "layer3.0.conv2")


def _random_resnet(depth: int, seed: int = 0) -> nn.Module:
    """A ResNet with seeded random weights and calibrated BatchNorm (a trained net's behaviour), in eval mode."""
    return calibrated(f"resnet{depth}", seed=seed)


def test_the_rewritten_shortcut_is_the_padded_shortcut() -> None:
    x = torch.randn(2, 16, 32, 32)
    pad = PadShortcut(8)
    conv = PadShortcutConv(16, 8)
    assert torch.equal(conv(x), pad(x))
    assert not conv.weight.requires_grad
    model = _random_resnet(20)
    rewritten = copy_model(model)
    assert rewrite_pad_shortcuts(rewritten) == 2
    xb = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(rewritten(xb), model(xb), atol=1e-6)


@pytest.mark.parametrize(("depth", "inner"), [(20, 9), (56, 27)])
def test_each_stage_residual_stream_is_one_group(depth: int, inner: int) -> None:
    names = [g.name for g in prunable_groups(_random_resnet(depth), input_shape=SHAPE)]
    assert len(names) == inner + 3
    assert set(STREAM) <= set(names)
    legacy = [g.name for g in prunable_groups(_random_resnet(depth), input_shape=SHAPE, residual_stream=False)]
    assert len(legacy) == inner and not set(STREAM) & set(legacy)


def _zero_channels(model: nn.Module, removed: dict[str, tuple[int, ...]]) -> nn.Module:
    """The model with the removed channels' producers zeroed (weights, BN scale and shift): a masked original."""
    net = copy_model(model)
    rewrite_pad_shortcuts(net)
    traced = Traced(net, SHAPE)
    with torch.no_grad():
        for name, idxs in removed.items():
            for member in traced.members(name):
                if member.role != "out":
                    continue
                rows = [member.idxs[i] for i, r in enumerate(member.root_idxs) if r in set(idxs)]
                mod = member.module
                mod.weight[rows] = 0.0
                if isinstance(mod, nn.BatchNorm2d):
                    mod.bias[rows] = 0.0
    return net


@pytest.mark.parametrize("depth", [20, 56])
def test_a_stream_pruned_resnet_equals_the_masked_original(depth: int) -> None:
    model = _random_resnet(depth, seed=depth)
    ratios = {
        "conv1": 0.5,
        "layer2.0.conv2": 0.25,
        "layer3.0.conv2": 0.5,
        "layer1.1.conv1": 0.5,
        "layer3.2.conv1": 0.75,
    }
    pruned = copy_model(model)
    removed = prune_in_place(pruned, Policy(ratios=ratios), input_shape=SHAPE)
    assert {k: len(v) for k, v in removed.items()} == {
        "conv1": 8,
        "layer1.1.conv1": 8,
        "layer2.0.conv2": 8,
        "layer3.0.conv2": 32,
        "layer3.2.conv1": 48,
    }
    assert pruned.linear.in_features == 32 and pruned.layer1[0].conv1.in_channels == 8
    masked = _zero_channels(model, removed)
    x = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():  # float64: random weights through 56 layers give logits of ~1e3, beyond float32's 1e-4
        diff = (pruned.double()(x) - masked.double()(x)).abs().max().item()
        moved = (masked(x) - model.double()(x)).abs().max().item()
    assert diff <= 1e-4
    assert moved > 1e-2  # the masked channels mattered: the comparison is not trivially equal


def test_pruned_shortcuts_stay_frozen_and_policies_rebuild_from_their_record() -> None:
    from prunegym.core.pruning import apply_policy_structure

    model = _random_resnet(20)
    pruned = apply_policy(model, {"conv1": 0.5, "layer2.0.conv2": 0.5}, input_shape=SHAPE)
    shortcuts = [m for m in pruned.modules() if isinstance(m, PadShortcutConv)]
    assert len(shortcuts) == 2 and not any(m.weight.requires_grad for m in shortcuts)
    assert shortcuts[0].in_channels == 8 and shortcuts[0].out_channels == 16
    rebuilt = apply_policy_structure(build_model("resnet20"), pruned.prunegym_policy)
    rebuilt.load_state_dict(pruned.state_dict())
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), pruned(x), atol=1e-6)
