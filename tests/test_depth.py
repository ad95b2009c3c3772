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
    RemovedReluBlock,
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


class _AddBlock(nn.Module):
    """A bring-your-own block: ``x + branch(x)``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class _ReluAddBlock(_AddBlock):
    """``relu(branch(x) + x)``, written the other way round."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu(self.branch(x) + x)


class _ProjectedBlock(_AddBlock):
    """A transformed shortcut: not removable."""

    def __init__(self, c: int) -> None:
        super().__init__(c)
        self.proj = nn.Conv2d(c, c, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.branch(x) + self.proj(x))


class _GatedBlock(_AddBlock):
    """Data-dependent control flow: does not trace, so not removable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x) if x.shape[1] > 0 else x


class _Wrap(nn.Module):
    """``x + body(x)`` around a removable block: the inner block is the one that counts."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _ByoNet(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.b1, self.b2 = _AddBlock(c), _ReluAddBlock(c)
        self.b3, self.b4, self.b5 = _ProjectedBlock(c), _GatedBlock(c), _Wrap(_AddBlock(c))
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b5(self.b4(self.b3(self.b2(self.b1(self.stem(x))))))  # b1's input and output may be negative
        return self.fc(x.mean((2, 3)))


@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean")  # _GatedBlock, exported
def test_bring_your_own_blocks_are_detected_by_tracing_and_removed_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _ByoNet().eval()
    assert removable_blocks(model) == ["b1", "b2", "b5.body"]
    for m in model.modules():  # BN statistics that make every branch matter
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.weight.data.uniform_(0.5, 1.5)
    removed = ("b1", "b2", "b5.body")
    pruned = apply_policy(model, Policy(ratios={}, removed=removed), input_shape=SHAPE)
    assert isinstance(pruned.b2, RemovedReluBlock) and type(pruned.b1) is RemovedBlock
    zeroed = copy_model(model)
    with torch.no_grad():
        for b in removed:
            zeroed.get_submodule(b).bn2.weight.zero_()
            zeroed.get_submodule(b).bn2.bias.zero_()
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        diff = (pruned.double()(x) - zeroed.double()(x)).abs().max().item()
        moved = (pruned(x) - model.double()(x)).abs().max().item()
    assert diff <= 1e-9 and moved > 1e-3
    path = export_onnx(pruned.float(), tmp_path / "byo.onnx", input_shape=SHAPE)
    assert (
        sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node) == 1 + 3 + 2
    )  # stem, b3 (with its projection), b4
    with pytest.raises(PolicyError, match=r"'b3', which is not a removable.*removable blocks: b1, b2, b5.body"):
        apply_policy(model, Policy(ratios={}, removed=("b3",)), input_shape=SHAPE)
