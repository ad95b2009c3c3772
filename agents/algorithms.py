"""Search agents selectable by name on the same PruningEnv: AMC's DDPG and stock TD3, SAC and PPO.

Every agent sees episodes of exactly ``num_groups`` steps with the reward on the last one, so all use gamma = 1
(the episode is the horizon) and, for the off-policy ones, AMC's budget-shaped settings: a replay buffer of
100 episodes, ``warmup_episodes`` of uniform random actions, and one gradient step per transition after each
episode. TD3 and SAC keep SB3's own learning rates, critics and reward handling (no relabelling, no baseline):
they are the "what does an off-the-shelf agent do" comparison for AMC's tricks.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.type_aliases import GymEnv

from prunegym.agents.ddpg import AMC_NET_ARCH, make_amc_ddpg, num_groups_of
from prunegym.agents.search_config import AGENT_NAMES

__all__ = ["AGENT_NAMES", "PPO_EPISODES_PER_ROLLOUT", "make_agent"]

log = logging.getLogger(__name__)

# PPO collects this many whole episodes per update (n_steps = 8 × num_groups) in minibatches of 2 episodes.
PPO_EPISODES_PER_ROLLOUT = 8
TD3_NOISE_SIGMA = 0.2  # Gaussian exploration in SB3's [-1, 1] units (0.1 in [0, 1] units)


def _off_policy_kwargs(*, num_groups: int, warmup_episodes: int) -> dict[str, Any]:
    arch = list(AMC_NET_ARCH)
    return {
        "buffer_size": 100 * num_groups,
        "learning_starts": warmup_episodes * num_groups,
        "batch_size": 64,
        "tau": 0.01,
        "gamma": 1.0,
        "train_freq": (1, "episode"),
        "gradient_steps": -1,
        "policy_kwargs": {"net_arch": {"pi": arch, "qf": list(arch)}},
    }


def make_agent(
    name: str,
    env: GymEnv,
    *,
    seed: int,
    warmup_episodes: int = 100,
    num_groups: int | None = None,
    tensorboard_log: str | None = None,
    device: str = "cpu",
    verbose: int = 0,
    sigma_decay: float = 0.95,
) -> BaseAlgorithm:
    """A search agent by name, configured for episodes of ``num_groups`` steps.

    Args:
        name: ``"ddpg"`` (AMC's DDPG, :func:`~prunegym.agents.ddpg.make_amc_ddpg`), ``"td3"``, ``"sac"`` or ``"ppo"``.
        env: the environment (one env, fixed-length episodes)
        seed: seed of all the agent's RNGs.
        warmup_episodes: episodes of uniform random actions (off-policy agents; PPO has no warm-up)
        num_groups: steps per episode; ``None`` reads ``env.unwrapped.num_groups``.
        tensorboard_log: folder for SB3's TensorBoard logs, or ``None``.
        device: PyTorch device.
        verbose: SB3 verbosity.
        sigma_decay: per-episode decay of DDPG's exploration σ after warm-up (AMC: 0.95)
    """
    key = name.lower()
    if key not in AGENT_NAMES:
        raise ValueError(f"unknown agent '{name}'; choose one of {', '.join(AGENT_NAMES)} (or 'random')")
    groups = num_groups_of(env) if num_groups is None else num_groups
    common: dict[str, Any] = {"tensorboard_log": tensorboard_log, "device": device, "verbose": verbose, "seed": seed}
    if key == "ddpg":
        return make_amc_ddpg(env, warmup_episodes=warmup_episodes, num_groups=groups, sigma_decay=sigma_decay, **common)
    if key == "td3":
        shape = env.action_space.shape
        noise = NormalActionNoise(mean=np.zeros(shape, np.float32), sigma=np.full(shape, TD3_NOISE_SIGMA, np.float32))
        return TD3(
            "MlpPolicy",
            env,
            action_noise=noise,
            **_off_policy_kwargs(num_groups=groups, warmup_episodes=warmup_episodes),
            **common,
        )
    if key == "sac":
        return SAC("MlpPolicy", env, **_off_policy_kwargs(num_groups=groups, warmup_episodes=warmup_episodes), **common)
    if warmup_episodes:
        log.info("PPO has no warm-up phase; warmup_episodes=%d is ignored", warmup_episodes)
    return PPO(
        "MlpPolicy",
        env,
        n_steps=PPO_EPISODES_PER_ROLLOUT * groups,
        batch_size=2 * groups,
        n_epochs=10,
        gamma=1.0,
        gae_lambda=0.95,
        ent_coef=0.0,
        **common,
    )
