"""AMC's DDPG on stable-baselines3, the search runner and random search, on a tiny stand-in env.

``TargetEnv`` has PruningEnv's contract (one step per group, ``Box(-1, 1, (1,))`` actions mapped to a ratio,
reward 0 until the last step, final ``info`` with the policy and figures) and a known optimum, so the tests
exercise the learner and the run-folder machinery without pruning a network.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from scipy.stats import truncnorm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import TrainFrequencyUnit

from prunegym.agents.algorithms import make_agent
from prunegym.agents.buffer import EpisodeRewardReplayBuffer
from prunegym.agents.checkpoint import read_latest_checkpoint, restore_agent
from prunegym.agents.ddpg import AMCDDPG, make_amc_ddpg
from prunegym.agents.noise import TruncatedNormalSchedule, sample_truncated_normal
from prunegym.agents.plots import plot_policy, plot_search_curve
from prunegym.agents.runner import SearchConfig, run_search
from prunegym.core.io import read_jsonl
from prunegym.core.policy import Policy
from prunegym.core.records import RECORD_KEYS

MAX_RATIO = 0.9


class TargetEnv(gym.Env):
    """Choose one ratio per group; the final reward is ``-mean((ratio - target)²)``.

    Observation: (step / (L - 1), previous ratio); action in [-1, 1] mapped to a ratio in [0, 0.9].
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self, num_groups: int = 4) -> None:
        self.num_groups = num_groups
        self.group_names = [f"layer{i}.conv" for i in range(num_groups)]
        self.targets = np.linspace(0.2, 0.7, num_groups)
        self.observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._ratios: list[float] = []

    def _obs(self) -> np.ndarray:
        step = min(len(self._ratios), self.num_groups - 1) / max(1, self.num_groups - 1)
        prev = self._ratios[-1] / MAX_RATIO if self._ratios else 0.0
        return np.array([step, prev], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._ratios = []
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        ratio = float(np.clip((float(np.asarray(action).reshape(-1)[0]) + 1.0) / 2.0, 0.0, 1.0)) * MAX_RATIO
        self._ratios.append(ratio)
        if len(self._ratios) < self.num_groups:
            return self._obs(), 0.0, False, False, {}
        reward = -float(np.mean((np.array(self._ratios) - self.targets) ** 2))
        info = {
            "policy": dict(zip(self.group_names, self._ratios, strict=True)),
            "reward": reward,
            "accuracy": 100.0 + 100.0 * reward,
            "macs_ratio": 1.0 - float(np.mean(self._ratios)),
            "params_ratio": float(np.mean((1.0 - np.array(self._ratios)) ** 2)),
            "latency_ms": None,
            "latency_ratio": None,
            "seconds": {"prune": 0.0, "evaluate": 0.0},
            "episode_actions": list(self._ratios),
        }
        return self._obs(), reward, True, False, info


class Trace(BaseCallback):
    """Records (episode count, gradient updates) at each rollout start, and every action and reward."""

    def __init__(self) -> None:
        super().__init__()
        self.updates: list[tuple[int, int]] = []
        self.actions: list[float] = []
        self.rewards: list[float] = []

    def _on_rollout_start(self) -> None:
        self.updates.append((self.model.episodes_done, self.model._n_updates))

    def _on_step(self) -> bool:
        self.actions.extend(np.asarray(self.locals["actions"]).reshape(-1).tolist())
        self.rewards.extend(np.asarray(self.locals["rewards"]).reshape(-1).tolist())
        return True


L = 4
WARMUP = 3


def _train(seed: int, episodes: int) -> tuple[AMCDDPG, Trace]:
    model = make_amc_ddpg(TargetEnv(L), seed=seed, warmup_episodes=WARMUP)
    trace = Trace()
    model.learn(total_timesteps=episodes * L, callback=trace)
    return model, trace


# ---------------------------------------------------------------------------------------------- configuration


def test_amc_hyperparameters_and_separate_learning_rates() -> None:
    model = make_amc_ddpg(TargetEnv(L), seed=0, warmup_episodes=WARMUP)
    linear = [m for m in model.actor.mu if isinstance(m, th.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(2, 300), (300, 300), (300, 1)]
    assert len(model.critic.q_networks) == 1  # DDPG: one critic
    critic = [m for m in model.critic.q_networks[0] if isinstance(m, th.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in critic] == [(3, 300), (300, 300), (300, 1)]
    assert (model.tau, model.gamma, model.batch_size) == (0.01, 1.0, 64)
    assert model.buffer_size == 100 * L and model.replay_buffer.buffer_size == 100 * L
    assert model.learning_starts == WARMUP * L
    assert (model.train_freq.frequency, model.train_freq.unit) == (1, TrainFrequencyUnit.EPISODE)
    assert model.gradient_steps == -1 and model.action_noise is None
    assert isinstance(model.replay_buffer, EpisodeRewardReplayBuffer)
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    # After training has run (SB3 re-applies its single lr_schedule in every train() call):
    model.learn(total_timesteps=(WARMUP + 1) * L)
    assert model._n_updates == L
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_noise_schedule_values_and_truncated_samples() -> None:
    schedule = make_amc_ddpg(TargetEnv(L), seed=0, warmup_episodes=WARMUP).noise_schedule
    assert schedule.sigma(WARMUP - 1) is None
    for k in (0, 1, 10):
        assert schedule.sigma(WARMUP + k) == pytest.approx(0.5 * 0.95**k)
        assert schedule.scaled_sigma(WARMUP + k) == pytest.approx(2 * 0.5 * 0.95**k)
    with pytest.raises(ValueError, match="decay"):
        TruncatedNormalSchedule(warmup_episodes=1, decay=1.5)

    rng = np.random.default_rng(0)
    mean, sigma = 0.8, 1.0
    draws = sample_truncated_normal(rng, mean=np.full(20000, mean), sigma=sigma)
    assert draws.min() >= -1.0 and draws.max() <= 1.0
    assert np.mean(draws == 1.0) == 0.0  # truncated, not clipped
    expected = truncnorm((-1 - mean) / sigma, (1 - mean) / sigma, loc=mean, scale=sigma)
    assert draws.mean() == pytest.approx(expected.mean(), abs=0.01)
    assert draws.std() == pytest.approx(expected.std(), abs=0.01)


def test_sample_action_after_warmup_is_truncated_normal_around_actor() -> None:
    model = make_amc_ddpg(TargetEnv(L), seed=0, warmup_episodes=WARMUP)
    model._last_obs = np.array([[0.5, 0.5]], dtype=np.float32)
    model.num_timesteps = model.learning_starts
    model.episodes_done = WARMUP + 10
    mu = float(model.predict(model._last_obs, deterministic=True)[0][0, 0])
    draws = np.array([model._sample_action(model.learning_starts)[1][0, 0] for _ in range(3000)])
    assert draws.min() >= -1.0 and draws.max() <= 1.0
    sigma = 2 * 0.5 * 0.95**10
    expected = truncnorm((-1 - mu) / sigma, (1 - mu) / sigma, loc=mu, scale=sigma)
    assert draws.std() == pytest.approx(expected.std(), rel=0.08)
    assert draws.mean() == pytest.approx(expected.mean(), abs=0.03)


# ---------------------------------------------------------------------------------------------- replay buffer


def _buffer(size: int) -> EpisodeRewardReplayBuffer:
    env = TargetEnv(L)
    return EpisodeRewardReplayBuffer(size, env.observation_space, env.action_space, device="cpu")


def _add_episode(buffer: EpisodeRewardReplayBuffer, length: int, final_reward: float) -> None:
    obs = np.zeros((1, 2), np.float32)
    for t in range(length):
        last = t == length - 1
        buffer.add(obs, obs, np.zeros((1, 1)), np.array([final_reward if last else 0.0]), np.array([last]), [{}])


def test_final_reward_is_written_on_every_transition_of_the_episode() -> None:
    buffer = _buffer(10)
    _add_episode(buffer, 3, -0.25)
    _add_episode(buffer, 3, 0.5)
    assert buffer.rewards[:6, 0].tolist() == [-0.25] * 3 + [0.5] * 3
    assert buffer.rewards[6:, 0].tolist() == [0.0] * 4


def test_relabelling_handles_wrap_around() -> None:
    buffer = _buffer(4)
    _add_episode(buffer, 3, 1.0)  # rows 0, 1, 2
    _add_episode(buffer, 3, 2.0)  # rows 3, 0, 1
    assert buffer.full and buffer.pos == 2
    assert buffer.rewards[:, 0].tolist() == [2.0, 2.0, 1.0, 2.0]
    _add_episode(buffer, 6, 3.0)  # longer than the buffer: every row is this episode's
    assert buffer.rewards[:, 0].tolist() == [3.0] * 4


def test_moving_average_baseline_is_subtracted_from_batches() -> None:
    buffer = _buffer(10)
    for reward in (1.0, 3.0, 8.0):
        _add_episode(buffer, 2, reward)  # rewards by row: 1 1 3 3 8 8
    first = buffer._get_samples(np.array([0, 2]))  # batch mean 2 -> baseline 2
    assert buffer.baseline == pytest.approx(2.0)
    assert first.rewards.flatten().tolist() == pytest.approx([-1.0, 1.0])
    second = buffer._get_samples(np.array([4, 5]))  # batch mean 8 -> 2 + 0.5 * (8 - 2) = 5
    assert buffer.baseline == pytest.approx(5.0)
    assert second.rewards.flatten().tolist() == pytest.approx([3.0, 3.0])
    assert buffer.rewards[4, 0] == 8.0  # stored rewards are untouched


# ---------------------------------------------------------------------------------------------- learning


def test_no_gradient_step_during_warmup_then_one_per_transition() -> None:
    _, trace = _train(seed=0, episodes=WARMUP + 3)
    # (episodes done, gradient steps) at each rollout start; the first actor episode runs the untrained actor.
    assert trace.updates == [(e, max(0, e - WARMUP) * L) for e in range(WARMUP + 3)]


def test_same_seed_gives_identical_runs() -> None:
    model_a, a = _train(seed=3, episodes=WARMUP + 3)
    model_b, b = _train(seed=3, episodes=WARMUP + 3)
    _, c = _train(seed=4, episodes=WARMUP + 3)
    assert len(a.actions) == (WARMUP + 3) * L
    assert a.actions == b.actions and a.rewards == b.rewards
    assert a.actions != c.actions
    assert model_a.replay_buffer.baseline == model_b.replay_buffer.baseline


# ---------------------------------------------------------------------------------------------- run_search


def _episodes(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(run_dir / "episodes.jsonl")


def _interrupt_at(n: int):
    def progress(done: int, total: int, best: float | None) -> None:
        if done == n:
            raise KeyboardInterrupt

    return progress


def test_run_search_outputs_interrupt_and_resume(tmp_path: Path) -> None:
    config = SearchConfig(agent="ddpg", episodes=8, warmup_episodes=2, seed=0, checkpoint_every=2)
    straight = run_search(env=TargetEnv(L), config=config, run_dir=tmp_path / "a")
    seen: list[tuple[int, int]] = []
    with pytest.raises(KeyboardInterrupt):
        run_search(
            env=TargetEnv(L),
            config=config,
            run_dir=tmp_path / "b",
            progress=lambda done, total, best: (seen.append((done, total)), _interrupt_at(5)(done, total, best)),
        )
    assert seen == [(i, 8) for i in range(1, 6)]
    run_b = tmp_path / "b"
    assert [r["episode"] for r in _episodes(run_b)] == [0, 1, 2, 3, 4]
    checkpoint = read_latest_checkpoint(run_b)
    assert checkpoint is not None and checkpoint.episodes_done == 4

    # The checkpoint restores weights, replay buffer and counters into a fresh agent.
    fresh = make_agent("ddpg", TargetEnv(L), seed=0, warmup_episodes=2)
    restore_agent(fresh, checkpoint)
    assert (fresh.replay_buffer.pos, fresh.num_timesteps, fresh.episodes_done) == (4 * L, 4 * L, 4)
    assert fresh._n_updates == (4 - 2) * L  # one per transition of the actor episodes 2 and 3
    assert fresh.replay_buffer.rewards[: 4 * L, 0].tolist() == pytest.approx(
        [r["reward"] for r in _episodes(run_b)[:4] for _ in range(L)]
    )
    assert fresh.replay_buffer.baseline is not None

    with pytest.raises(Exception, match="--resume"):
        run_search(env=TargetEnv(L), config=config, run_dir=run_b)
    resumed = run_search(env=TargetEnv(L), config=config, run_dir=run_b, resume=True)
    assert resumed.resumed_from == 4 and resumed.episodes == 8
    records = _episodes(run_b)
    assert [r["episode"] for r in records] == list(range(8))
    assert all(tuple(r) == RECORD_KEYS for r in records)
    # Restored RNGs: the resumed run replays exactly the uninterrupted one.
    assert [r["reward"] for r in records] == [r["reward"] for r in _episodes(tmp_path / "a")]
    assert resumed.best_reward == straight.best_reward
    assert [r["sigma"] for r in records[:3]] == [None, None, 0.5]
    assert records[3]["sigma"] == pytest.approx(0.5 * 0.1 ** (1 / 6))  # budget-tied: 0.05 after 6 agent episodes

    final = read_latest_checkpoint(run_b)
    assert final is not None and final.episodes_done == 8
    assert final.state["agent"]["replay_buffer"]["pos"] == 8 * L

    best = Policy.load(run_b / "best_policy.yaml")
    best_record = max(records, key=lambda r: r["reward"])
    assert best.reward == pytest.approx(best_record["reward"]) and best.episode == best_record["episode"]
    assert dict(best.ratios) == pytest.approx(best_record["policy"])
    assert best.source == "agents.ddpg"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # one file per writer (the run, then its resume, which purges the steps it replays); read each in the order
    # written: a directory reader follows the files' names, whose per-process counter suffix sorts "…10" before
    # "…9", so it skips one when earlier tests in the process made many writers
    files = sorted((run_b / "tensorboard" / "search").glob("events.out.tfevents.*"), key=lambda f: f.stat().st_mtime)
    steps: list[int] = []
    tags: set[str] = set()
    for f in files:
        events = EventAccumulator(str(f))
        events.Reload()
        new = [e.step for e in events.Scalars("search/reward")]
        steps = [x for x in steps if not new or x < new[0]] + new
        tags |= set(events.Tags()["scalars"])
    assert steps == list(range(8))
    assert "actions/layer0.conv" in tags
    assert list((run_b / "tensorboard").glob("ddpg_1/events.out.tfevents*"))  # SB3's losses

    assert plot_search_curve(run_dir=run_b, warmup_episodes=2).stat().st_size > 0
    channels = {name: 16 for name in best.ratios}
    assert plot_policy(policy=best, channels=channels, out=tmp_path / "policy.png").stat().st_size > 0


def test_resume_refuses_a_different_seed(tmp_path: Path) -> None:
    config = SearchConfig(agent="ddpg", episodes=3, warmup_episodes=1, seed=0, checkpoint_every=1)
    run_search(env=TargetEnv(L), config=config, run_dir=tmp_path)
    other = SearchConfig(agent="ddpg", episodes=4, warmup_episodes=1, seed=1, checkpoint_every=1)
    with pytest.raises(ValueError, match="seed=0"):
        run_search(env=TargetEnv(L), config=other, run_dir=tmp_path, resume=True)


def test_random_search_same_records_and_resume(tmp_path: Path) -> None:
    config = SearchConfig(agent="random", episodes=5, seed=1, checkpoint_every=2)
    straight = run_search(env=TargetEnv(L), config=config, run_dir=tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run_search(env=TargetEnv(L), config=config, run_dir=tmp_path / "b", progress=_interrupt_at(3))
    resumed = run_search(env=TargetEnv(L), config=config, run_dir=tmp_path / "b", resume=True)
    a, b = _episodes(tmp_path / "a"), _episodes(tmp_path / "b")
    assert [r["episode"] for r in b] == list(range(5)) and resumed.resumed_from == 2
    assert all(tuple(r) == RECORD_KEYS and r["sigma"] is None for r in b)
    assert [r["policy"] for r in a] == [r["policy"] for r in b]
    assert len({json.dumps(r["policy"]) for r in a}) == 5  # random, not constant
    assert straight.best_reward == max(r["reward"] for r in a)
    assert Policy.load(tmp_path / "b" / "best_policy.yaml").source == "agents.random"


@pytest.mark.parametrize("name", ["td3", "sac", "ppo"])
def test_other_agents_run_the_same_search(tmp_path: Path, name: str) -> None:
    config = SearchConfig(agent=name, episodes=5, warmup_episodes=2, seed=0, checkpoint_every=2, tensorboard=False)
    summary = run_search(env=TargetEnv(L), config=config, run_dir=tmp_path)
    records = _episodes(tmp_path)
    assert [r["episode"] for r in records] == list(range(5)) and summary.episodes == 5
    assert all(math.isfinite(r["reward"]) for r in records)
    checkpoint = read_latest_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.episodes_done == 5
    fresh = make_agent(name, TargetEnv(L), seed=0, warmup_episodes=2)
    restore_agent(fresh, checkpoint)
    assert fresh.num_timesteps >= 4 * L


def test_search_default_ties_sigma_decay_to_the_budget_and_amc_decay_is_opt_in() -> None:
    from prunegym.agents.algorithms import make_agent
    from prunegym.agents.search_config import SearchConfig
    from prunegym.core.errors import ConfigError

    cfg = SearchConfig(episodes=300, warmup_episodes=100)
    assert cfg.exploration_decay == pytest.approx(0.1 ** (1 / 200))
    model = make_agent("ddpg", TargetEnv(), seed=0, warmup_episodes=100, sigma_decay=cfg.exploration_decay)
    assert model.exploration_sigma(99) is None  # warm-up: uniform random actions
    assert model.exploration_sigma(100) == pytest.approx(0.5)
    assert model.exploration_sigma(200) == pytest.approx(0.5 * 0.1**0.5)  # geometric: halfway in log space
    assert model.exploration_sigma(300) == pytest.approx(0.05)  # 0.5 · 0.1 at the end of the budget
    assert SearchConfig(episodes=50, warmup_episodes=10).exploration_decay == pytest.approx(0.1 ** (1 / 40))
    amc = SearchConfig(episodes=300, warmup_episodes=100, sigma_decay=0.95)
    assert amc.exploration_decay == 0.95
    with pytest.raises(ConfigError, match="sigma_decay"):
        SearchConfig(sigma_decay=1.5)
