"""Run a search on a PruningEnv: records, best policy, TensorBoard, checkpoints, interrupt and resume.

``run_search`` drives one SB3 ``learn()`` call (or the random-search loop) for the remaining episode budget.
A :class:`SearchCallback` turns every finished episode into one ``episodes.jsonl`` line and checkpoints the agent
at rollout starts, i.e. right after SB3 has trained on the episodes collected so far (SB3 calls a callback's
``_on_step`` *before* it stores the transition and trains, so a checkpoint there would be half an episode behind).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gymnasium import Env
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from prunegym.agents.algorithms import make_agent
from prunegym.agents.checkpoint import restore_agent, write_checkpoint
from prunegym.agents.ddpg import num_groups_of
from prunegym.agents.random_search import run_random_search
from prunegym.agents.search_config import SearchConfig, resume_point
from prunegym.core.records import EpisodeRecorder, ProgressFn, SearchSummary, policy_template_of
from prunegym.core.run_folder import TENSORBOARD_DIR

__all__ = ["SearchCallback", "SearchConfig", "SearchSummary", "run_search"]

log = logging.getLogger(__name__)


def exploration_sigma(model: BaseAlgorithm, episode: int) -> float | None:
    """The exploration σ (in [0, 1] action units) used in ``episode``, when the agent has such a schedule."""
    sigma_of = getattr(model, "exploration_sigma", None)
    return None if sigma_of is None else sigma_of(episode)


class SearchCallback(BaseCallback):
    """Records finished episodes and checkpoints the agent every ``checkpoint_every`` episodes.

    Args:
        recorder: writes the per-episode outputs.
        run_dir: the run folder (checkpoints go to ``run_dir/checkpoints``)
        checkpoint_every: episodes between checkpoints.
        checkpoint_state: JSON-safe search state stored in every checkpoint (config, number of groups)
        last_checkpoint: episodes covered by the checkpoint the run started from.
    """

    def __init__(
        self,
        *,
        recorder: EpisodeRecorder,
        run_dir: Path,
        checkpoint_every: int,
        checkpoint_state: dict[str, Any],
        last_checkpoint: int = 0,
    ) -> None:
        super().__init__(verbose=0)
        self.recorder = recorder
        self.run_dir = Path(run_dir)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_state = checkpoint_state
        self.last_checkpoint = last_checkpoint

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done:
                episode = self.recorder.episodes_done
                self.recorder.record(info, sigma=exploration_sigma(self.model, episode))
        if isinstance(self.model, OffPolicyAlgorithm):
            return True  # learn() ends exactly at the budget; stopping here would skip storing the last step
        return self.recorder.episodes_done < self.recorder.total  # PPO: rollouts overshoot the budget

    def _on_rollout_start(self) -> None:
        if self.recorder.episodes_done - self.last_checkpoint >= self.checkpoint_every:
            self.checkpoint()

    def _on_training_end(self) -> None:
        if self.recorder.episodes_done > self.last_checkpoint:
            self.checkpoint()

    def checkpoint(self) -> None:
        episodes = self.recorder.episodes_done
        counted = getattr(self.model, "episodes_done", episodes)
        assert counted == episodes, f"agent counted {counted} episodes, the recorder {episodes}"
        state = {**self.checkpoint_state, "best_reward": self.recorder.best_reward}
        write_checkpoint(self.run_dir, episodes_done=episodes, state=state, model=self.model)
        self.last_checkpoint = episodes


def run_search(
    *,
    env: Env,
    config: SearchConfig,
    run_dir: Path,
    resume: bool = False,
    progress: ProgressFn | None = None,
) -> SearchSummary:
    """Search per-group pruning ratios on ``env`` with ``config.agent`` for ``config.episodes`` episodes.

    Writes into ``run_dir``: ``episodes.jsonl`` (one line per episode), ``best_policy.yaml``,
    ``tensorboard/search`` (per-episode scalars) and ``tensorboard/<agent>_<n>`` (SB3's losses), and
    ``checkpoints/``. With ``resume`` the search continues from the last checkpoint: episode lines written after
    it are dropped and played again with the restored agent, replay buffer and RNG states, so no episode number
    is lost or repeated (and a deterministic env replays them identically).

    Args:
        env: a PruningEnv (episodes of ``env.unwrapped.num_groups`` steps, final ``info`` with the policy)
        config: agent, budget, warm-up, seed, checkpoint period.
        run_dir: the run folder (created if missing)
        resume: continue the search already in ``run_dir``.
        progress: ``progress(episodes_done, total, best_reward)`` after every episode; an exception raised there
            (``KeyboardInterrupt``) stops the search with every output written so far intact.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.agent == "random":
        return run_random_search(env=env, config=config, run_dir=run_dir, resume=resume, progress=progress)
    num_groups = num_groups_of(env)
    checkpoint, records = resume_point(run_dir, config=config, resume=resume, num_groups=num_groups)
    start = 0 if checkpoint is None else checkpoint.episodes_done
    recorder = EpisodeRecorder(
        run_dir=run_dir,
        source=f"agents.{config.agent}",
        total_episodes=config.episodes,
        records=records,
        progress=progress,
        tensorboard=config.tensorboard,
        policy_template=policy_template_of(env),
    )
    try:
        model = make_agent(
            config.agent,
            env,
            seed=config.seed,
            warmup_episodes=config.warmup_episodes,
            num_groups=num_groups,
            tensorboard_log=str(run_dir / TENSORBOARD_DIR) if config.tensorboard else None,
            device=config.device,
            sigma_decay=config.exploration_decay,
        )
        if checkpoint is not None:
            restore_agent(model, checkpoint)
            log.info("resuming %s after %d episodes", run_dir, start)
        remaining = config.episodes - start
        if remaining > 0:
            callback = SearchCallback(
                recorder=recorder,
                run_dir=run_dir,
                checkpoint_every=config.checkpoint_every,
                checkpoint_state={"config": config.to_dict(), "num_groups": num_groups},
                last_checkpoint=start,
            )
            model.learn(
                total_timesteps=remaining * num_groups,
                callback=callback,
                log_interval=1,
                tb_log_name=config.agent,
                reset_num_timesteps=checkpoint is None,
            )
    finally:
        recorder.close()
    return recorder.summary(agent=config.agent, resumed_from=start)
