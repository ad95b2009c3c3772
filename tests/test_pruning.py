"""Prunable groups, the pruner, its costs, criteria and saved pruned models."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo_helpers import calibrated

from prunegym.core.checkpoint import load_model, save_model
from prunegym.core.errors import UserError
from prunegym.core.models import build_model
from prunegym.core.policy import Policy
from prunegym.core.pruning import (
    apply_policy,
    apply_policy_structure,
    cost_table,
    kept_channels,
    prunable_groups,
    uniform_ratio_for_macs,
)
from prunegym.core.stats import model_stats

CIFAR = (3, 32, 32)


def outputs(model: nn.Module, shape: tuple[int, int, int] = CIFAR, n: int = 4) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.randn(n, *shape, generator=torch.Generator().manual_seed(1)))


# ------------------------------------------------------------------------------------------------ groups


def test_without_the_shortcut_rewrite_the_padded_shortcut_group_is_excluded(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="prunegym.core.pruning"):
        groups = prunable_groups(build_model("resnet56"), input_shape=CIFAR, residual_stream=False)
    assert len(groups) == 27
    assert [g.name for g in groups[:2]] == ["layer1.0.conv1", "layer1.1.conv1"]
    assert groups[9].name == "layer2.0.conv1" and groups[26].name == "layer3.8.conv1"
    assert [g.index for g in groups] == list(range(27))
    g = groups[9]
    assert (g.type, g.in_channels, g.out_channels, g.stride, g.kernel) == ("conv", 16, 32, 2, 3)
    assert (g.input_size, g.output_size) == ((32, 32), (16, 16))
    assert g.members == ("layer2.0.conv1", "layer2.0.bn1", "layer2.0.conv2")
    assert g.consumers == ("layer2.0.conv2",)
    assert g.macs == 32 * 16 * 9 * 16 * 16
    assert g.group_macs == g.macs + 32 * 32 * 9 * 16 * 16
    excluded = [r.getMessage() for r in caplog.records if "left out of the action space" in r.getMessage()]
    assert len(excluded) == 1
    assert "group 'conv1'" in excluded[0] and "breaks the forward pass" in excluded[0]
    assert "zero-padded shortcut" in excluded[0]

    names20 = [g.name for g in prunable_groups(build_model("resnet20"), input_shape=CIFAR, residual_stream=False)]
    assert names20 == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]


def test_mobilenet_depthwise_is_coupled_with_its_expand_conv() -> None:
    groups = {g.name: g for g in prunable_groups(build_model("mobilenetv2"), input_shape=CIFAR)}
    assert len(groups) == 25
    g = groups["features.4.conv.0"]  # expand 1x1 -> BN -> ReLU6 -> depthwise 3x3 -> BN -> ReLU6 -> project
    assert g.type == "dwconv" and g.out_channels == 96
    assert g.producers == ("features.4.conv.0", "features.4.conv.1", "features.4.conv.3", "features.4.conv.4")
    assert g.consumers == ("features.4.conv.6",)
    residual = groups["features.4.conv.6"]  # the 24-channel stream shared by two blocks through the addition
    assert {"features.4.conv.6", "features.5.conv.6", "features.5.conv.0", "features.6.conv.0"} <= set(residual.members)
    assert "classifier" not in groups and "features.20" in groups


# ------------------------------------------------------------------------------------------------ pruner


@pytest.mark.parametrize(
    ("name", "shape"),
    [("resnet20", CIFAR), ("vgg16_bn", CIFAR), ("mobilenetv2", CIFAR), ("smallcnn", (1, 8, 8)), ("minivggnet", CIFAR)],
)
def test_zero_policy_is_exact(name: str, shape: tuple[int, int, int]) -> None:
    model = calibrated(name, shape=shape)
    groups = prunable_groups(model, input_shape=shape)
    pruned = apply_policy(model, Policy.uniform([g.name for g in groups], 0.0), input_shape=shape)
    assert pruned is not model
    assert torch.equal(outputs(pruned, shape), outputs(model, shape))
    assert pruned.prunegym_info == model.prunegym_info


def resnet20_macs(kept: list[int], in_channels: int = 3, classes: int = 10) -> int:
    """Independent count: stem + per block conv1 (k x Cin) and conv2 (Cout x k), 3x3 convs, + classifier."""
    macs = 16 * in_channels * 9 * 32 * 32
    cin, i = 16, 0
    for planes, size in ((16, 32), (32, 16), (64, 8)):
        for _ in range(3):
            macs += kept[i] * cin * 9 * size * size + planes * kept[i] * 9 * size * size
            cin, i = planes, i + 1
    return macs + 64 * classes


def test_random_policies_resnet20_macs_and_rebuild() -> None:
    model = calibrated("resnet20")  # the inner groups, whose MACs the hand formula resnet20_macs knows
    groups = prunable_groups(model, input_shape=CIFAR, residual_stream=False)
    table = cost_table(model, input_shape=CIFAR, residual_stream=False)
    rng = random.Random(0)
    seen = set()
    for i in range(20):
        round_to = (1, 2, 4, 8)[i % 4]
        ratios = {g.name: rng.uniform(0.0, 0.8) for g in groups}
        pruned = apply_policy(model, Policy(ratios=ratios), input_shape=CIFAR, round_to=round_to)
        kept = [kept_channels(g, ratios[g.name], round_to) for g in groups]
        seen.add(tuple(kept))
        assert [pruned.get_submodule(g.name).out_channels for g in groups] == kept
        stats = model_stats(pruned, input_shape=CIFAR)
        assert stats.macs == resnet20_macs(kept)
        assert table.predict(ratios, round_to=round_to) == (stats.macs, stats.params)
        assert outputs(pruned).shape == (4, 10)
        rebuilt = apply_policy_structure(build_model("resnet20"), pruned.prunegym_policy)
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in pruned.state_dict().items()
        }
    assert len(seen) == 20


def test_random_policies_mobilenetv2() -> None:
    model = calibrated("mobilenetv2")
    groups = prunable_groups(model, input_shape=CIFAR)
    table = cost_table(model, input_shape=CIFAR)
    base = model_stats(model, input_shape=CIFAR)
    assert table.predict({}) == (base.macs, base.params)
    rng = random.Random(1)
    for i in range(20):
        round_to = (1, 4, 8, 2)[i % 4]
        ratios = {g.name: rng.uniform(0.0, 0.8) for g in groups}
        pol = Policy(ratios=ratios, round_to=round_to)
        pruned = apply_policy(model, pol, input_shape=CIFAR)
        for g in groups:  # every producer of a group (expand conv, depthwise conv, BN) has the group's width
            k = kept_channels(g, ratios[g.name], round_to)
            for p in g.producers:
                mod = pruned.get_submodule(p)
                assert (mod.out_channels if isinstance(mod, nn.Conv2d) else mod.num_features) == k, p
        stats = model_stats(pruned, input_shape=CIFAR)
        assert table.predict(ratios, round_to=round_to) == (stats.macs, stats.params)
        assert stats.macs < base.macs
        assert torch.isfinite(outputs(pruned)).all()
        if i % 5 == 0:
            rebuilt = apply_policy_structure(build_model("mobilenetv2"), pruned.prunegym_policy)
            assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
                k: v.shape for k, v in pruned.state_dict().items()
            }


def test_apply_never_mutates_and_rejects_bad_policies() -> None:
    model = calibrated("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # tracing needs autograd; the pruner turns it back on
        pruned = apply_policy(model, {"layer1.0.conv1": 0.5}, input_shape=CIFAR)
    assert pruned.layer1[0].conv1.out_channels == 8 and model.layer1[0].conv1.out_channels == 16
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"unknown group 'layer1.0.conv'.*did you mean 'layer1.0.conv1'"):
        apply_policy(model, {"layer1.0.conv": 0.5}, input_shape=CIFAR)
    with pytest.raises(ValueError, match=r"leaves no channel of group 'layer1.0.conv1'"):
        apply_policy(model, {"layer1.0.conv1": 0.97}, input_shape=CIFAR)
    with pytest.raises(ValueError, match=r"group 'conv1', which is not prunable"):
        apply_policy(model, {"conv1": 0.5}, input_shape=CIFAR, residual_stream=False)
    with pytest.raises(UserError, match="needs calibration batches"):
        apply_policy(model, {"layer1.0.conv1": 0.5}, input_shape=CIFAR, criterion="taylor")
    with pytest.raises(UserError, match="unknown pruning criterion 'l3'"):
        apply_policy(model, {"layer1.0.conv1": 0.5}, input_shape=CIFAR, criterion="l3")


def test_save_and_reload_pruned_model(tmp_path: Path) -> None:
    model = calibrated("resnet20")
    pol = Policy(ratios={"layer1.0.conv1": 0.5, "layer2.1.conv1": 0.3, "layer3.2.conv1": 0.7}, round_to=4)
    pruned = apply_policy(model, pol, input_shape=CIFAR)
    assert pruned.prunegym_policy["round_to"] == 4 and pruned.prunegym_policy["input_shape"] == [3, 32, 32]
    path = save_model(tmp_path / "pruned.pt", model=pruned, policy=pruned.prunegym_policy)
    loaded = load_model(str(path))
    assert loaded.get_submodule("layer3.2.conv1").out_channels == 20
    assert torch.equal(outputs(loaded), outputs(pruned))


def test_uniform_ratio_for_half_the_macs_resnet56() -> None:
    model = build_model("resnet56")
    ratio = uniform_ratio_for_macs(model, input_shape=CIFAR, target_macs_fraction=0.5)
    groups = prunable_groups(model, input_shape=CIFAR)
    pruned = apply_policy(model, Policy.uniform([g.name for g in groups], ratio), input_shape=CIFAR)
    frac = model_stats(pruned, input_shape=CIFAR).macs / model_stats(model, input_shape=CIFAR).macs
    assert 0.48 <= frac <= 0.50
    with pytest.raises(ValueError, match="no uniform ratio reaches"):
        uniform_ratio_for_macs(model, input_shape=CIFAR, target_macs_fraction=0.01, residual_stream=False)
    ratio8 = uniform_ratio_for_macs(model, input_shape=CIFAR, target_macs_fraction=0.5, round_to=8)
    pruned8 = apply_policy(model, Policy.uniform([g.name for g in groups], ratio8), input_shape=CIFAR, round_to=8)
    assert all(pruned8.get_submodule(g.name).out_channels % 8 == 0 for g in groups)


# ------------------------------------------------------------------------------------------------ criteria


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 5, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(5)
        self.conv2 = nn.Conv2d(5, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def kept_filters(pruned: nn.Module, model: nn.Module) -> list[int]:
    w, w0 = pruned.conv1.weight.detach(), model.conv1.weight.detach()
    return [next(j for j in range(len(w0)) if torch.equal(w[i], w0[j])) for i in range(len(w))]


def test_criteria_keep_the_expected_filters() -> None:
    model = Tiny().eval()
    with torch.no_grad():
        model.conv1.weight.zero_()
        w = model.conv1.weight.view(5, -1)  # 18 weights per filter
        w[0, 0] = 3.0  # L1 3.0, L2 3.0 (one large weight)
        w[1, :] = 0.2  # L1 3.6, L2 0.85 (many small ones)
        w[2, :2] = torch.tensor([3.2, 0.1])
        w[3, :2] = torch.tensor([0.0, 1.0])
        w[4, :2] = torch.tensor([-1.1, 0.0])
        model.bn1.weight.copy_(torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7]))
    shape = (2, 6, 6)
    pol = {"conv1": 0.4}  # 5 channels -> keep 3
    assert [g.name for g in prunable_groups(model, input_shape=shape)] == ["conv1", "conv2"]
    assert kept_filters(apply_policy(model, pol, input_shape=shape, criterion="l1"), model) == [0, 1, 2]
    assert kept_filters(apply_policy(model, pol, input_shape=shape, criterion="l2"), model) == [0, 2, 4]
    assert kept_filters(apply_policy(model, pol, input_shape=shape, criterion="bn_scale"), model) == [1, 2, 4]
    # FPGM keeps the filters farthest (summed Euclidean distance) from the others, here not the largest ones
    filters = model.conv1.weight.detach().reshape(5, -1)
    dist = torch.cdist(filters[None], filters[None])[0].sum(1)
    fpgm = sorted(torch.argsort(-dist)[:3].tolist())
    assert fpgm != [0, 1, 2]
    assert kept_filters(apply_policy(model, pol, input_shape=shape, criterion="fpgm"), model) == fpgm
    rnd = kept_filters(apply_policy(model, pol, input_shape=shape, criterion="random"), model)
    assert rnd == kept_filters(apply_policy(model, pol, input_shape=shape, criterion="random"), model)

    # Taylor: |w * dL/dw| of conv1 filters and bn1 affine parameters, gradients summed over the batches
    g = torch.Generator().manual_seed(0)
    calib = [(torch.randn(8, *shape, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(2)]
    ref = Tiny().eval()
    ref.load_state_dict(model.state_dict())
    for x, y in calib:
        F.cross_entropy(ref(x), y, reduction="sum").backward()
    score = sum(
        (p * p.grad).abs().reshape(5, -1).sum(1)
        for p in (ref.conv1.weight, ref.bn1.weight, ref.bn1.bias)  # type: ignore[union-attr]
    )
    expected = sorted(torch.argsort(-score, stable=True)[:3].tolist())
    pruned = apply_policy(model, pol, input_shape=shape, criterion="taylor", calib=calib)
    assert kept_filters(pruned, model) == expected
    assert all(p.grad is None for p in model.parameters())


def test_lsq_reconstructs_better_than_l1() -> None:
    from prunegym.core.data import iterate_batches, load_data

    data = load_data("digits")
    torch.manual_seed(0)
    model = build_model("smallcnn", in_channels=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for epoch in range(2):
        gen = torch.Generator().manual_seed(epoch)
        for x, y in iterate_batches(
            data.train_x, data.train_y, batch_size=64, mean=data.mean, std=data.std, shuffle=True, generator=gen
        ):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    calib = list(iterate_batches(data.train_x, data.train_y, batch_size=128, mean=data.mean, std=data.std, limit=512))
    xv, _ = next(iterate_batches(data.val_x, data.val_y, batch_size=256, mean=data.mean, std=data.std))

    def consumer_error(pruned: nn.Module) -> float:
        got: list[torch.Tensor] = []
        hooks = [m.features[7].register_forward_hook(lambda _m, _i, o: got.append(o)) for m in (model, pruned)]
        with torch.no_grad():
            model(xv), pruned(xv)
        for h in hooks:
            h.remove()
        return float(((got[0] - got[1]) ** 2).mean() / (got[0] ** 2).mean())

    pol = {"features.3": 0.5}  # features.3 -> BN -> ReLU -> pool -> features.7 (the consumer refit by lsq)
    l1 = apply_policy(model, pol, input_shape=data.input_shape, criterion="l1")
    lsq = apply_policy(model, pol, input_shape=data.input_shape, criterion="lsq", calib=calib)
    assert lsq.features[7].in_channels == 16
    assert consumer_error(lsq) < 0.5 * consumer_error(l1)
    assert consumer_error(lsq) < 0.1
