"""Masked (sparse) pruning and the transform to a dense model."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune
from zoo_helpers import calibrated

from prunegym.core.checkpoint import load_model, save_model
from prunegym.core.models import build_model
from prunegym.core.policy import Policy
from prunegym.core.pruning import apply_policy, apply_policy_structure, prunable_groups
from prunegym.core.pruning.masking import mask_policy, max_abs_diff, merge_prune_masks, transform
from prunegym.core.stats import model_stats

CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_mask_policy_zeroes_selected_channels_only() -> None:
    model = calibrated("resnet20")
    pol = Policy(ratios={"layer1.0.conv1": 0.5, "layer2.1.conv1": 0.25, "layer3.2.conv1": 0.75})
    masked = mask_policy(model, pol, input_shape=CIFAR)
    assert shapes(masked) == shapes(model)
    removed = masked.prunegym_mask["layer1.0.conv1"]
    assert len(removed) == 8 and len(masked.prunegym_mask["layer3.2.conv1"]) == 48
    # the same channels the pruner removes (l1 keeps the largest filters)
    pruned = apply_policy(model, pol, input_shape=CIFAR)
    kept = [c for c in range(16) if c not in removed]
    assert torch.equal(pruned.layer1[0].conv1.weight, model.layer1[0].conv1.weight[kept])
    got: list[torch.Tensor] = []
    hook = masked.layer1[0].bn1.register_forward_hook(lambda _m, _i, o: got.append(o))
    with torch.no_grad():
        masked(torch.randn(4, *CIFAR))
    hook.remove()
    assert torch.equal(got[0][:, removed], torch.zeros_like(got[0][:, removed]))
    assert (got[0][:, kept].abs().amax(dim=(0, 2, 3)) > 0).all()
    assert max_abs_diff(masked, pruned, input_shape=CIFAR) <= 1e-5
    assert max_abs_diff(model, masked, input_shape=CIFAR) > 1e-3  # the input model is untouched
    assert torch.count_nonzero(model.layer1[0].conv1.weight[removed]) > 0


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_transform_of_masked_model_is_exact_and_small(name: str, tmp_path: Path) -> None:
    model = calibrated(name)
    groups = prunable_groups(model, input_shape=CIFAR, residual_stream=False)  # masks keep the architecture
    pol = Policy(ratios={g.name: (0.25, 0.5, 0.6)[i % 3] for i, g in enumerate(groups)}, round_to=2)
    masked = mask_policy(model, pol, input_shape=CIFAR)
    result = transform(masked, input_shape=CIFAR)
    assert result.max_abs_diff <= 1e-5
    assert max_abs_diff(masked, result.model, input_shape=CIFAR, n=4, seed=3) <= 1e-5
    pruned = apply_policy(model, pol, input_shape=CIFAR)
    assert model_stats(result.model, input_shape=CIFAR).macs == model_stats(pruned, input_shape=CIFAR).macs
    assert shapes(result.model) == shapes(pruned)
    assert set(result.removed) == {g.name for g in groups} and result.kept_constant == {}
    rebuilt = apply_policy_structure(build_model(name), result.policy.to_dict())
    assert shapes(rebuilt) == shapes(result.model)
    if name == "resnet20":
        path = save_model(tmp_path / "dense.pt", model=result.model, policy=result.policy.to_dict())
        assert max_abs_diff(load_model(str(path)), masked, input_shape=CIFAR) <= 1e-5


def ln_mask_convs(model: nn.Module, *, zero_bn: bool) -> dict[str, int]:
    """``ln_structured`` 50% of every conv's filters; optionally zero the following BN so the channels die."""
    removed = {}
    layers = list(model.features)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            torch_prune.ln_structured(layer, "weight", amount=0.5, n=1, dim=0)
            dead = (layer.weight_mask.flatten(1) == 0).all(1)
            removed[f"features.{i}"] = int(dead.sum())
            if zero_bn:
                with torch.no_grad():
                    layers[i + 1].weight[dead] = 0.0
                    layers[i + 1].bias[dead] = 0.0
    return removed


@pytest.mark.parametrize(("name", "shape"), [("smallcnn", DIGITS), ("minivggnet", CIFAR)])
def test_transform_of_torch_ln_structured_masks(name: str, shape: tuple[int, int, int]) -> None:
    model = calibrated(name, shape=shape)
    expected = ln_mask_convs(model, zero_bn=True)
    assert "features.0.weight_orig" in model.state_dict()
    result = transform(model, input_shape=shape)
    assert dict(result.removed) == expected
    assert result.max_abs_diff <= 1e-5
    assert max_abs_diff(model, result.model, input_shape=shape) <= 1e-5
    assert "features.0.weight" in result.model.state_dict()
    assert result.model.features[0].out_channels == model.features[0].out_channels - expected["features.0"]


def test_transform_keeps_channels_that_batchnorm_makes_constant(caplog: pytest.LogCaptureFixture) -> None:
    model = calibrated("smallcnn", shape=DIGITS)
    ln_mask_convs(model, zero_bn=False)  # zero filters, but BN maps 0 to beta - gamma * mean / std != 0
    with caplog.at_level(logging.INFO, logger="prunegym.core.pruning.masking"):
        result = transform(model, input_shape=DIGITS)
    assert dict(result.removed) == {}
    assert dict(result.kept_constant) == {"features.0": 16, "features.3": 16, "features.7": 32, "features.10": 32}
    assert result.max_abs_diff == 0.0
    assert shapes(result.model) == shapes(build_model("smallcnn", in_channels=1))
    assert any("nonzero constant output after BatchNorm; kept" in r.getMessage() for r in caplog.records)


def test_persistent_masks_survive_finetuning() -> None:
    model = calibrated("smallcnn", shape=DIGITS)
    groups = prunable_groups(model, input_shape=DIGITS)
    masked = mask_policy(model, Policy.uniform([g.name for g in groups], 0.5), input_shape=DIGITS, persistent=True)
    assert "features.0.weight_mask" in masked.state_dict()
    opt = torch.optim.SGD(masked.parameters(), lr=0.1, momentum=0.9)
    masked.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        opt.zero_grad()
        x, y = torch.randn(16, *DIGITS, generator=g), torch.randint(0, 10, (16,), generator=g)
        F.cross_entropy(masked(x), y).backward()
        opt.step()
    masked.eval()
    removed = masked.prunegym_mask["features.3"]
    assert torch.count_nonzero(masked.features[3].weight[removed]) == 0
    result = transform(masked, input_shape=DIGITS)
    assert dict(result.removed) == {"features.0": 16, "features.3": 16, "features.7": 32, "features.10": 32}
    assert max_abs_diff(masked, result.model, input_shape=DIGITS) <= 1e-5


def test_merge_prune_masks_and_diff_errors() -> None:
    model = calibrated("smallcnn", shape=DIGITS)
    ln_mask_convs(model, zero_bn=True)
    merged = merge_prune_masks(model.state_dict())
    assert not any(k.endswith(("_orig", "_mask")) for k in merged)
    fresh = build_model("smallcnn", in_channels=1)
    fresh.load_state_dict(merged)
    assert max_abs_diff(fresh, model, input_shape=DIGITS) == 0.0
    with pytest.raises(ValueError, match="output shape"):
        max_abs_diff(fresh, build_model("smallcnn", in_channels=1, num_classes=3), input_shape=DIGITS)
