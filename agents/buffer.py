"""AMC's replay buffer on stable-baselines3: episode-reward relabelling and a moving-average reward baseline.

AMC (``amc_search.py`` / ``lib/agent.py``) stores every transition of an episode with the episode's *final*
reward (the env pays 0 until the last layer), and subtracts from each sampled batch a moving average of batch-mean
rewards (``ma += 0.5 · (batch_mean - ma)``; the first batch sets ``ma``). stable-baselines3 stores the per-step
reward as given; :class:`EpisodeRewardReplayBuffer` rewrites the rows of an episode when its last step arrives and
overrides only ``_get_samples``, as ``NStepReplayBuffer`` does.

Arrays are saved with :func:`save_buffer_arrays` (``np.savez``) and read with ``allow_pickle=False``; the
relabelling/baseline state is a JSON-safe dict (:func:`buffer_state` / :func:`load_buffer_state`), so nothing is
ever unpickled from a run folder.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from prunegym.core.io import atomic_write_bytes

__all__ = [
    "EpisodeRewardReplayBuffer",
    "buffer_state",
    "load_buffer_arrays",
    "load_buffer_state",
    "save_buffer_arrays",
]

_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


class EpisodeRewardReplayBuffer(ReplayBuffer):
    """Replay buffer that writes each episode's final reward onto all its transitions, and baselines batches.

    Args:
        buffer_size: rows kept (AMC: 100 × number of layers/groups)
        observation_space: observation space.
        action_space: action space.
        device: PyTorch device of the sampled tensors.
        n_envs: parallel environments (rows of one episode are tracked per env)
        optimize_memory_usage: must stay ``False`` (relabelling needs ``next_observations``)
        handle_timeout_termination: as in :class:`~stable_baselines3.common.buffers.ReplayBuffer`.
        baseline_alpha: moving-average step of the reward baseline (AMC: 0.5)
        subtract_baseline: subtract the moving-average baseline in ``_get_samples`` (AMC: yes)

    Rows of an episode still in progress keep the env's per-step reward (0 for PruningEnv) until it ends; with
    ``train_freq=(1, "episode")`` no batch is drawn while an episode is open. Rows overwritten by wrap-around
    before their episode ends (episodes longer than the buffer) simply receive the same final reward.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        *,
        baseline_alpha: float = 0.5,
        subtract_baseline: bool = True,
    ) -> None:
        if optimize_memory_usage:
            raise ValueError("EpisodeRewardReplayBuffer needs optimize_memory_usage=False")
        if not 0.0 < baseline_alpha <= 1.0:
            raise ValueError(f"baseline_alpha is {baseline_alpha}; use a step in (0, 1] such as 0.5")
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=False,
            handle_timeout_termination=handle_timeout_termination,
        )
        self.baseline_alpha = baseline_alpha
        self.subtract_baseline = subtract_baseline
        self.baseline: float | None = None
        self.open_rows: list[list[int]] = [[] for _ in range(self.n_envs)]

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        row = self.pos
        super().add(obs, next_obs, action, reward, done, infos)
        reward = np.asarray(reward, dtype=np.float32).reshape(self.n_envs)
        done = np.asarray(done).reshape(self.n_envs)
        for env_idx in range(self.n_envs):
            rows = self.open_rows[env_idx]
            rows.append(row)
            if len(rows) > self.buffer_size:  # an episode longer than the buffer: older rows are gone anyway
                del rows[: len(rows) - self.buffer_size]
            if done[env_idx]:
                self.rewards[rows, env_idx] = reward[env_idx]
                self.open_rows[env_idx] = []

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        samples = super()._get_samples(batch_inds, env=env)
        if not self.subtract_baseline:
            return samples
        batch_mean = float(samples.rewards.mean())
        if self.baseline is None:
            self.baseline = batch_mean
        else:
            self.baseline += self.baseline_alpha * (batch_mean - self.baseline)
        return samples._replace(rewards=samples.rewards - self.baseline)


def buffer_state(buffer: ReplayBuffer) -> dict[str, Any]:
    """JSON-safe counters of ``buffer`` (position, fullness, and the relabelling/baseline state if any)."""
    state: dict[str, Any] = {"pos": int(buffer.pos), "full": bool(buffer.full), "buffer_size": int(buffer.buffer_size)}
    if isinstance(buffer, EpisodeRewardReplayBuffer):
        state["baseline"] = buffer.baseline
        state["baseline_alpha"] = buffer.baseline_alpha
        state["open_rows"] = [list(map(int, rows)) for rows in buffer.open_rows]
    return state


def load_buffer_state(buffer: ReplayBuffer, state: dict[str, Any]) -> None:
    """Inverse of :func:`buffer_state` (arrays come from :func:`load_buffer_arrays`)."""
    if int(state["buffer_size"]) != buffer.buffer_size:
        raise ValueError(
            f"checkpointed replay buffer holds {state['buffer_size']} rows but this agent's holds "
            f"{buffer.buffer_size}; resume with the same model and agent settings"
        )
    buffer.pos = int(state["pos"])
    buffer.full = bool(state["full"])
    if isinstance(buffer, EpisodeRewardReplayBuffer):
        baseline = state.get("baseline")
        buffer.baseline = None if baseline is None else float(baseline)
        buffer.open_rows = [list(map(int, rows)) for rows in state.get("open_rows", [[]] * buffer.n_envs)]


def save_buffer_arrays(buffer: ReplayBuffer, path: Path) -> Path:
    """Write the buffer's arrays to ``path`` with ``np.savez``, atomically."""
    arrays = {name: getattr(buffer, name) for name in _ARRAYS if getattr(buffer, name, None) is not None}
    raw = io.BytesIO()
    np.savez(raw, **arrays)
    return atomic_write_bytes(Path(path), raw.getvalue())


def load_buffer_arrays(buffer: ReplayBuffer, path: Path) -> None:
    """Read arrays written by :func:`save_buffer_arrays` into ``buffer`` (``allow_pickle=False``)."""
    with np.load(Path(path), allow_pickle=False) as data:
        for name in _ARRAYS:
            if getattr(buffer, name, None) is None:
                continue
            if name not in data.files:
                raise ValueError(f"{path} lacks replay-buffer array '{name}'; the checkpoint is incomplete")
            current = getattr(buffer, name)
            saved = data[name]
            if saved.shape != current.shape:
                raise ValueError(
                    f"{path}: replay-buffer array '{name}' has shape {saved.shape}, this agent's {current.shape}; "
                    "resume with the same environment and agent settings"
                )
            current[...] = saved
