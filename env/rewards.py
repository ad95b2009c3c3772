"""Episode rewards, chosen by name. Each is a small pure function of the episode's measured figures.

``accuracy`` is a fraction in [0, 1] (AMC scales accuracy by 0.01 the same way).

- ``acc`` — AMC resource-constrained mode: reward = accuracy; the budget is enforced by the action wall.
- ``acc_flops`` — AMC accuracy-guaranteed mode: R = −error · log(MACs).
- ``latency_soft`` — MnasNet's soft constraint: accuracy · (latency / target)^w with w = −0.07 on both sides.
- ``latency_hard`` — MnasNet's hard constraint: accuracy when latency ≤ target, else accuracy · (latency/target)^−1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from prunegym.core.errors import UserError


@dataclass(frozen=True)
class RewardInputs:
    accuracy: float  # fraction in [0, 1]
    macs: int
    params: int
    latency_ms: float | None = None
    target_ms: float | None = None
    latency_weight: float = -0.07


def reward_acc(x: RewardInputs) -> float:
    return x.accuracy


def reward_acc_flops(x: RewardInputs) -> float:
    return -(1.0 - x.accuracy) * math.log(max(x.macs, 1))


def _latency(x: RewardInputs, name: str) -> tuple[float, float]:
    if x.latency_ms is None or x.target_ms is None:
        raise UserError(f"reward '{name}' needs latency; set latency to measured or predicted and a target_ms")
    return x.latency_ms, x.target_ms


def reward_latency_soft(x: RewardInputs) -> float:
    lat, target = _latency(x, "latency_soft")
    return x.accuracy * (lat / target) ** x.latency_weight


def reward_latency_hard(x: RewardInputs) -> float:
    lat, target = _latency(x, "latency_hard")
    return x.accuracy if lat <= target else x.accuracy * (lat / target) ** -1.0


REWARDS: dict[str, Callable[[RewardInputs], float]] = {
    "acc": reward_acc,
    "acc_flops": reward_acc_flops,
    "latency_soft": reward_latency_soft,
    "latency_hard": reward_latency_hard,
}


def get_reward(name: str) -> Callable[[RewardInputs], float]:
    try:
        return REWARDS[name]
    except KeyError:
        raise UserError(f"unknown reward '{name}'; choose one of {', '.join(REWARDS)}") from None


def needs_latency(name: str) -> bool:
    return name.startswith("latency")
