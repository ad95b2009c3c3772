"""Depth pruning: residual blocks with an identity shortcut are removed outright, exactly."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn
from zoo_helpers import calibrated

from prunegym.core.models import build_model
from prunegym.core.onnx_export import export_onnx
from prunegym.core.policy import Policy, PolicyError
from prunegym.core.pruning import (
    RemovedBlock,
    apply_policy,
    apply_policy_structure,
    cost_table,
    inner_group_of,
    prunable_groups,
    removable_blocks,
)
from prunegym.core.pruning.trace import copy_model
from prunegym.core.stats import model_stats

SHAPE = (3, 32, 32)


def _random(name: str, seed: int = 0) -> nn.Module:
    return calibrated(name, seed=seed)


def test_removable_blocks_are_those_with_an_identity_shortcut() -> None:
    blocks = removable_blocks(build_model("resnet56"))
    assert len(blocks) == 25  # 27 blocks less the two that subsample
    assert "layer2.0" not in blocks and "layer3.0" not in blocks and blocks[0] == "layer1.0"
    assert len(removable_blocks(build_model("mobilenetv2"))) == 10
    groups = [g.name for g in prunable_groups(build_model("resnet20"), input_shape=SHAPE)]
    assert inner_group_of("layer1.2", groups) == "layer1.2.conv1"


def _zero_branch(model: nn.Module, blocks: list[str]) -> nn.Module:
    net = copy_model(model)
    with torch.no_grad():
        for b in blocks:
            bn = net.get_submodule(b).bn2
            bn.weight.zero_()
            bn.bias.zero_()
    return net


@pytest.mark.parametrize("depth", [20, 56])
def test_removing_a_block_equals_zeroing_its_branch(depth: int) -> None:
    model = _random(f"resnet{depth}", seed=depth)
    blocks = ["layer1.1", "layer2.2", "layer3.1"]
    pruned = apply_policy(model, Policy(ratios={"layer1.1.conv1": 0.5}, removed=tuple(blocks)), input_shape=SHAPE)
    assert all(isinstance(pruned.get_submodule(b), RemovedBlock) for b in blocks)
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        diff = (pruned.double()(x) - _zero_branch(model, blocks).double()(x)).abs().max().item()
        moved = (pruned(x) - model.double()(x)).abs().max().item()
    assert diff <= 1e-6 and moved > 1e-3


def test_depth_and_width_costs_are_predicted_exactly() -> None:
    model = _random("resnet56")
    table = cost_table(model, input_shape=SHAPE)
    policy = Policy(
        ratios={"conv1": 0.5, "layer2.0.conv2": 0.25, "layer2.3.conv1": 0.5, "layer1.4.conv1": 0.5},
        removed=("layer1.4", "layer1.5", "layer2.1", "layer3.7", "layer3.8"),
    )
    pruned = apply_policy(model, policy, input_shape=SHAPE)
    stats = model_stats(pruned, input_shape=SHAPE)
    assert table.predict(policy.ratios, removed=policy.removed) == (stats.macs, stats.params)
    assert stats.macs < model_stats(model, input_shape=SHAPE).macs * 0.85


def test_a_removed_block_policy_round_trips_through_yaml_rebuild_and_onnx(tmp_path: Path) -> None:
    model = _random("resnet56")
    removed = tuple(f"layer{s}.{b}" for s in (1, 2, 3) for b in range(4, 9))
    policy = Policy(ratios={"layer1.0.conv1": 0.5}, removed=removed, model="resnet56")
    policy.save(tmp_path / "p.yaml")
    loaded = Policy.load(tmp_path / "p.yaml")
    assert loaded.removed == removed and loaded == policy
    pruned = apply_policy(model, loaded, input_shape=SHAPE)
    rebuilt = apply_policy_structure(build_model("resnet56"), pruned.prunegym_policy)
    rebuilt.load_state_dict(pruned.state_dict())
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), pruned(x), atol=1e-5)
    path = export_onnx(pruned, tmp_path / "m.onnx", input_shape=SHAPE)
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)
    assert convs == 55 - 2 * len(removed)


def test_removing_a_block_that_is_not_removable_is_a_one_line_error() -> None:
    with pytest.raises(PolicyError, match=r"block 'layer2.0', which is not a removable.*removable blocks: layer1.0"):
        apply_policy(build_model("resnet20"), Policy(ratios={}, removed=("layer2.0",)), input_shape=SHAPE)
    with pytest.raises(PolicyError, match="list of block names"):
        Policy.from_dict({"ratios": {}, "removed": "layer1.0"})
