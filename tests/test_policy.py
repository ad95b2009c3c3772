"""Policy dataclass, YAML round trip, validation, and the channel-count rule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from prunegym.core.errors import UserError
from prunegym.core.policy import Policy, PolicyError
from prunegym.core.pruning import kept_channels

GROUPS = ["layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer3.2.conv1"]


def test_yaml_round_trip(tmp_path: Path) -> None:
    pol = Policy(
        ratios={"layer1.0.conv1": 0.25, "layer2.0.conv1": 0.5},
        source="ddpg",
        model="resnet56",
        round_to=8,
        criterion="lsq",
        input_shape=(3, 32, 32),
        reward=0.91,
        accuracy=90.5,
        episode=312,
        metrics={"macs_ratio": 0.49, "latency_ms": 1.25},
    )
    path = pol.save(tmp_path / "runs" / "best_policy.yaml")
    raw = yaml.safe_load(path.read_text())
    assert raw["version"] == 1
    assert raw["ratios"] == {"layer1.0.conv1": 0.25, "layer2.0.conv1": 0.5}
    assert raw["input_shape"] == [3, 32, 32]
    back = Policy.load(path)
    assert back == pol
    assert back.to_dict() == pol.to_dict()
    assert back.input_shape == (3, 32, 32)
    assert back.ratio("layer3.2.conv1") == 0.0
    assert [p.name for p in path.parent.iterdir()] == ["best_policy.yaml"]  # no temp file left


def test_policy_is_read_only_and_keyed() -> None:
    pol = Policy(ratios={"b": 0.5, "a": 0.0, "c": 0.1234567})
    with pytest.raises(TypeError):
        pol.ratios["a"] = 0.3  # type: ignore[index]
    assert pol.cache_key() == (("b", 0.5), ("c", 0.123457))
    assert pol.with_metrics(top1=91.0).metrics == {"top1": 91.0}
    assert Policy.uniform(GROUPS, 0.3).ratios == dict.fromkeys(GROUPS, 0.3)


def test_unknown_group_suggests_close_names() -> None:
    pol = Policy(ratios={"layer1.0.conv": 0.3})
    with pytest.raises(ValueError, match=r"unknown group 'layer1.0.conv'.*did you mean 'layer1.0.conv1'") as info:
        pol.validate(GROUPS)
    assert isinstance(info.value, UserError)
    assert "\n" not in str(info.value)
    assert Policy(ratios={"layer2.0.conv1": 0.3}).validate(GROUPS).ratio("layer2.0.conv1") == 0.3


@pytest.mark.parametrize("value", [1.0, -0.1, math.nan, 1.5, "0.3", True])
def test_bad_ratio_names_the_key(value: object) -> None:
    with pytest.raises(ValueError, match=r"layer2\.0\.conv1"):
        Policy(ratios={"layer1.0.conv1": 0.1, "layer2.0.conv1": value}).validate(GROUPS)  # type: ignore[dict-item]


def test_from_dict_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="version 2"):
        Policy.from_dict({"version": 2, "ratios": {}})
    with pytest.raises(PolicyError, match="unknown field 'ratio'"):
        Policy.from_dict({"version": 1, "ratio": {}})
    with pytest.raises(PolicyError, match="no 'ratios'"):
        Policy.from_dict({"version": 1})
    with pytest.raises(PolicyError, match="round_to"):
        Policy.from_dict({"ratios": {}, "round_to": 0})
    with pytest.raises(PolicyError, match="not found"):
        Policy.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ratios: [1, 2\n")
    with pytest.raises(PolicyError, match="cannot parse policy"):
        Policy.load(bad)
    assert Policy.from_dict({"ratios": {"a": 0.5}}).ratios == {"a": 0.5}  # version defaults to 1


@pytest.mark.parametrize(
    ("n", "ratio", "round_to", "kept"),
    [
        (16, 0.0, 1, 16),
        (16, 0.5, 1, 8),
        (16, 0.3, 1, 11),  # floor(11.2)
        (10, 0.7, 1, 3),  # 10 * 0.3 = 2.9999999999999996 in floats: still 3
        (10, 0.9, 1, 1),
        (64, 0.3, 8, 48),  # 44.8 -> 44 -> nearest multiple of 8
        (64, 0.5, 8, 32),
        (16, 0.9, 8, 8),  # 1 channel left, never below round_to
        (20, 0.05, 8, 16),  # 19 -> 16
        (12, 0.1, 8, 8),  # 10 -> 8
        (14, 0.1, 8, 8),  # 12 -> 16 > 14 -> largest multiple <= 14
        (4, 0.5, 8, 4),  # fewer channels than round_to: keep all
        (10, 0.0, 8, 10),  # ratio 0 never rounds
    ],
)
def test_kept_channels(n: int, ratio: float, round_to: int, kept: int) -> None:
    assert kept_channels(n, ratio, round_to) == kept


def test_ratio_that_leaves_no_channel() -> None:
    with pytest.raises(ValueError, match=r"leaves no channel of group \(16 channels\).*below 0.9375"):
        kept_channels(16, 0.95)
