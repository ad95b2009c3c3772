"""AMC's exploration: a truncated normal around the actor's action, with a σ that decays per episode.

AMC (He et al. 2018, ``lib/agent.py``) samples ``truncnorm((lo - μ)/σ, (hi - μ)/σ, loc=μ, scale=σ)`` with
``σ = 0.5 · 0.95^(episode - warmup)`` on an action in [0, 1]. stable-baselines3 works in the scaled space [-1, 1]
and adds noise (``ActionNoise.__call__`` returns a noise vector that is *added*, then clipped), which cannot express
a truncated distribution around the mean, and it calls ``ActionNoise.reset()`` at every episode end *and* at the
start of every ``learn()``, which makes a reset-counted schedule drift on resume. So the schedule here is a pure
function of the episode index, and the sampler takes the mean and an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TruncatedNormalSchedule", "sample_truncated_normal"]

# Width of [0, 1] (AMC's action units) relative to SB3's [-1, 1]: σ there is twice σ here.
SCALED_PER_UNIT = 2.0


@dataclass(frozen=True)
class TruncatedNormalSchedule:
    """σ per episode: ``initial_sigma · decay^(episode - warmup_episodes)`` in [0, 1] action units.

    Args:
        warmup_episodes: episodes of uniform random actions before the actor is used (σ is ``None`` there)
        initial_sigma: σ of the first episode after warm-up, in [0, 1] units (AMC: 0.5)
        decay: per-episode multiplicative decay (AMC: 0.95)
    """

    warmup_episodes: int
    initial_sigma: float = 0.5
    decay: float = 0.95

    def __post_init__(self) -> None:
        if self.warmup_episodes < 0:
            raise ValueError(f"warmup_episodes is {self.warmup_episodes}; use 0 or more")
        if self.initial_sigma <= 0:
            raise ValueError(f"initial_sigma is {self.initial_sigma}; use a positive σ such as 0.5")
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay is {self.decay}; use a factor in (0, 1] such as 0.95")

    def sigma(self, episode: int) -> float | None:
        """σ in [0, 1] action units for the 0-based ``episode``; ``None`` during warm-up (uniform actions)."""
        if episode < self.warmup_episodes:
            return None
        return self.initial_sigma * self.decay ** (episode - self.warmup_episodes)

    def scaled_sigma(self, episode: int) -> float | None:
        """σ in stable-baselines3's scaled [-1, 1] action space (twice :meth:`sigma`)."""
        sigma = self.sigma(episode)
        return None if sigma is None else SCALED_PER_UNIT * sigma


def sample_truncated_normal(
    rng: np.random.Generator,
    *,
    mean: np.ndarray,
    sigma: float,
    low: float = -1.0,
    high: float = 1.0,
    max_rounds: int = 1000,
) -> np.ndarray:
    """One draw per element of ``mean`` from N(mean, σ²) truncated to [low, high], by rejection.

    ``mean`` is clipped into the bounds first, so every element accepts with probability at least
    Φ(2(high - low)/σ) - 1/2 (about 0.48 when σ equals the full width): ``max_rounds`` is never reached in
    practice; elements still outside after it are clipped. The draws depend only on ``rng``'s state.
    """
    if low >= high:
        raise ValueError(f"truncation bounds are [{low}, {high}]; low must be below high")
    if sigma < 0:
        raise ValueError(f"sigma is {sigma}; use a non-negative standard deviation")
    mu = np.clip(np.asarray(mean, dtype=np.float64), low, high)
    if sigma == 0:
        return mu
    out = mu.copy()
    pending = np.ones(mu.shape, dtype=bool)
    for _ in range(max_rounds):
        draw = rng.normal(mu[pending], sigma)
        accepted = (draw >= low) & (draw <= high)
        idx = np.flatnonzero(pending)[accepted]
        out.flat[idx] = draw[accepted]
        pending.flat[idx] = False
        if not pending.any():
            return out
    return np.clip(out, low, high)  # pragma: no cover - probability below 0.52^1000
