"""AMC's DDPG agent (He et al., ECCV 2018; mit-han-lab/amc) as a small subclass of stable-baselines3's DDPG."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import DDPG
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import update_learning_rate
from stable_baselines3.td3.policies import TD3Policy

from prunegym.agents.buffer import EpisodeRewardReplayBuffer
from prunegym.agents.noise import TruncatedNormalSchedule, sample_truncated_normal

try:  # stable-baselines3 >= 2.6; get_schedule_fn() warns there
    from stable_baselines3.common.utils import FloatSchedule as _schedule
except ImportError:  # pragma: no cover - older stable-baselines3
    from stable_baselines3.common.utils import get_schedule_fn as _schedule

__all__ = ["AMCDDPG", "AMC_NET_ARCH", "make_amc_ddpg", "num_groups_of"]

AMC_NET_ARCH: tuple[int, ...] = (300, 300)
# Mixed into the exploration generator's seed so it never replays the action space's own stream
# (gymnasium seeds ``action_space.np_random`` as ``default_rng(seed)``).
_NOISE_STREAM = 0x414D43


def num_groups_of(env: GymEnv) -> int:
    """Steps per episode of a PruningEnv-like env: ``env.unwrapped.num_groups`` (or a VecEnv's first env)."""
    if hasattr(env, "get_attr"):  # a VecEnv
        return int(env.get_attr("num_groups")[0])
    try:
        return int(env.unwrapped.num_groups)  # type: ignore[union-attr]
    except AttributeError as exc:
        raise ValueError(
            f"{type(env).__name__} has no 'num_groups' (steps per episode); pass num_groups= explicitly"
        ) from exc


class AMCDDPG(DDPG):
    """DDPG configured and minimally extended to be AMC's search agent.

    What AMC does and where it lives here:

    - actor and critic 300-300 (``policy_kwargs.net_arch``), Adam with **separate** learning rates, actor 1e-4 and
      critic 1e-3 (SB3 has one ``learning_rate``; here it is the actor's, ``critic_learning_rate`` the critic's,
      applied in ``_setup_model`` and in every ``_update_learning_rate``);
    - tau 0.01, gamma 1, batch 64, replay buffer 100 × #groups;
    - ``warmup_episodes`` of uniform random actions (SB3's ``learning_starts = warmup_episodes × num_groups``);
    - after each episode, one gradient step per collected transition (``train_freq=(1, "episode")``,
      ``gradient_steps=-1``);
    - exploration by a truncated normal around the actor's action with σ = ``initial_sigma · sigma_decay^(e - W)``
      in [0, 1] action units, truncated to the action bounds (``_sample_action``; episodes counted in
      ``_store_transition`` because SB3 resets ``action_noise`` at every episode end and at every ``learn()``);
    - the episode's final reward written onto all its transitions, and a moving-average reward baseline
      subtracted from every batch (:class:`~prunegym.agents.buffer.EpisodeRewardReplayBuffer`).

    Where stable-baselines3 differs from AMC's code, deliberately kept:

    - the actor ends in ``tanh`` over [-1, 1] (AMC: ``sigmoid`` over [0, 1]); the env maps [-1, 1] linearly onto
      its ratio range, so σ in SB3 units is twice AMC's;
    - the critic is one MLP on the concatenated (state, action) (AMC embeds state and action in two 300-unit layers
      and sums them), with PyTorch's default init (AMC: fan-in uniform, last layer U(±3e-3));
    - warm-up is exactly ``warmup_episodes`` episodes (AMC's ``episode <= warmup`` gives warmup + 1), and σ is 0.5
      on the first actor episode (AMC: 0.5 · 0.95); as in AMC, the first actor episode runs the untrained actor
      and gradient steps start after it (SB3 trains only once ``num_timesteps > learning_starts``);
    - the L gradient steps of an episode run after all L transitions are stored (AMC interleaves store/update);
    - batches are drawn with replacement from the global NumPy RNG (SB3's ``ReplayBuffer.sample``); the
      exploration noise comes from the model's own seeded ``numpy.random.Generator``;
    - the truncation bounds are the full action range (AMC truncates to its [lbound, rbound] ratio bounds; here
      ratio bounds and the action wall belong to the env).

    Where prunegym's search differs from AMC by default: ``run_search`` passes a ``sigma_decay`` tied to the
    budget (σ 0.5 → 0.05 over the agent's episodes, :attr:`SearchConfig.exploration_decay`) instead of AMC's 0.95
    (BENCHMARKS.md, "Search: DDPG vs Optuna vs random vs uniform", says why). This class keeps AMC's 0.95 as its
    own default.

    Args:
        policy: policy class or alias (``"MlpPolicy"``)
        env: the environment (one env; episodes of exactly ``num_groups`` steps)
        warmup_episodes: episodes of uniform random actions before the actor acts (AMC: 100)
        num_groups: steps per episode (prunable groups); sets buffer size and ``learning_starts``.
        learning_rate: actor learning rate, or a schedule of the remaining progress (AMC: 1e-4)
        critic_learning_rate: critic learning rate or schedule (AMC: 1e-3)
        buffer_size: replay rows; ``None`` means 100 × ``num_groups`` (AMC)
        batch_size: minibatch size (AMC: 64)
        tau: Polyak coefficient of the target networks (AMC: 0.01)
        gamma: discount (AMC: 1, the episode is the horizon)
        train_freq: collection between updates (AMC: ``(1, "episode")``)
        gradient_steps: updates per collection, -1 = one per collected transition (AMC)
        initial_sigma: exploration σ of the first actor episode, [0, 1] units (AMC: 0.5)
        sigma_decay: per-episode decay of σ (AMC: 0.95)
        baseline_alpha: step of the moving-average reward baseline (AMC: 0.5)
        subtract_baseline: subtract the baseline from sampled rewards (AMC: yes)
        action_noise: extra additive SB3 noise on top of the truncated normal; leave ``None`` for AMC.
        policy_kwargs: extra policy arguments, merged over ``net_arch=[300, 300]`` for actor and critic.
        tensorboard_log: folder for SB3's TensorBoard logs (losses, learning rates), or ``None``.
        verbose: SB3 verbosity (0 none, 1 info, 2 debug)
        seed: seed of Python/NumPy/PyTorch/action-space RNGs and of the exploration generator.
        device: PyTorch device; the 300-300 MLPs are fastest on ``"cpu"``.
        _init_setup_model: build the networks now (SB3 convention)
    """

    replay_buffer: ReplayBuffer

    def __init__(
        self,
        policy: str | type[TD3Policy],
        env: GymEnv,
        *,
        warmup_episodes: int,
        num_groups: int,
        learning_rate: float | Schedule = 1e-4,
        critic_learning_rate: float | Schedule = 1e-3,
        buffer_size: int | None = None,
        batch_size: int = 64,
        tau: float = 0.01,
        gamma: float = 1.0,
        train_freq: int | tuple[int, str] = (1, "episode"),
        gradient_steps: int = -1,
        initial_sigma: float = 0.5,
        sigma_decay: float = 0.95,
        baseline_alpha: float = 0.5,
        subtract_baseline: bool = True,
        action_noise: ActionNoise | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "cpu",
        _init_setup_model: bool = True,
    ) -> None:
        if num_groups < 1:
            raise ValueError(f"num_groups is {num_groups}; an episode needs at least one prunable group")
        if warmup_episodes < 0:
            raise ValueError(f"warmup_episodes is {warmup_episodes}; use 0 or more (AMC: 100)")
        self.warmup_episodes = warmup_episodes
        self.num_groups = num_groups
        self.noise_schedule = TruncatedNormalSchedule(
            warmup_episodes=warmup_episodes, initial_sigma=initial_sigma, decay=sigma_decay
        )
        self.critic_learning_rate = critic_learning_rate
        self.episodes_done = 0
        arch = list(AMC_NET_ARCH)
        super().__init__(
            policy=policy,
            env=env,
            learning_rate=learning_rate,
            buffer_size=100 * num_groups if buffer_size is None else buffer_size,
            learning_starts=warmup_episodes * num_groups,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=EpisodeRewardReplayBuffer,
            replay_buffer_kwargs={"baseline_alpha": baseline_alpha, "subtract_baseline": subtract_baseline},
            policy_kwargs={"net_arch": {"pi": arch, "qf": list(arch)}, **(policy_kwargs or {})},
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self.critic_lr_schedule = _schedule(self.critic_learning_rate)
        update_learning_rate(self.critic.optimizer, self.critic_lr_schedule(1.0))
        self.noise_rng = np.random.default_rng(None if self.seed is None else [int(self.seed), _NOISE_STREAM])

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        # SB3 applies ``lr_schedule`` to every optimizer it is given; AMC's actor and critic differ.
        progress = self._current_progress_remaining
        actor_lr = self.lr_schedule(progress)
        critic_lr = self.critic_lr_schedule(progress)
        self.logger.record("train/learning_rate", actor_lr)
        self.logger.record("train/critic_learning_rate", critic_lr)
        update_learning_rate(self.actor.optimizer, actor_lr)
        update_learning_rate(self.critic.optimizer, critic_lr)

    def exploration_sigma(self, episode: int | None = None) -> float | None:
        """σ in [0, 1] action units for the 0-based ``episode`` (default: the current one); ``None`` in warm-up."""
        return self.noise_schedule.sigma(self.episodes_done if episode is None else episode)

    def _sample_action(
        self,
        learning_starts: int,
        action_noise: ActionNoise | None = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.num_timesteps < learning_starts:
            return super()._sample_action(learning_starts, action_noise, n_envs)  # uniform warm-up
        assert self._last_obs is not None, "self._last_obs was not set"
        unscaled, _ = self.predict(self._last_obs, deterministic=True)  # type: ignore[arg-type]
        mean = self.policy.scale_action(unscaled)
        sigma = self.noise_schedule.scaled_sigma(self.episodes_done)
        assert sigma is not None, "past learning_starts the episode count must be past warm-up"
        scaled = sample_truncated_normal(self.noise_rng, mean=mean, sigma=sigma, low=-1.0, high=1.0)
        if action_noise is not None:
            scaled = np.clip(scaled + action_noise(), -1.0, 1.0)
        buffer_action = scaled.astype(np.float32)
        return self.policy.unscale_action(buffer_action), buffer_action

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)
        self.episodes_done += int(np.sum(dones))


def make_amc_ddpg(
    env: GymEnv,
    *,
    seed: int,
    warmup_episodes: int = 100,
    num_groups: int | None = None,
    tensorboard_log: str | None = None,
    device: str = "cpu",
    verbose: int = 0,
    **overrides: Any,
) -> AMCDDPG:
    """AMC's DDPG agent on ``env`` with AMC's hyper-parameters.

    Args:
        env: a PruningEnv (or any env with a ``Box(-1, 1, (1,))`` action and fixed-length episodes)
        seed: seed of every RNG the agent uses; equal seeds give equal runs on the same env.
        warmup_episodes: episodes of uniform random actions before the actor acts (AMC: 100)
        num_groups: steps per episode; ``None`` reads ``env.unwrapped.num_groups``.
        tensorboard_log: folder for SB3's TensorBoard logs, or ``None``.
        device: PyTorch device (``"cpu"`` is fastest for 300-300 MLPs)
        verbose: SB3 verbosity.
        overrides: any other :class:`AMCDDPG` argument (``batch_size=``, ``critic_learning_rate=``, ...)
    """
    return AMCDDPG(
        "MlpPolicy",
        env,
        warmup_episodes=warmup_episodes,
        num_groups=num_groups_of(env) if num_groups is None else num_groups,
        tensorboard_log=tensorboard_log,
        device=device,
        verbose=verbose,
        seed=seed,
        **overrides,
    )
