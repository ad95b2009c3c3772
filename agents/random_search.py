"""Random search: uniform random actions through the same env, budget and records as the RL agents.

The yardstick every learned agent must beat (AMC's own warm-up is this search). Each step draws an action
uniformly from the env's action box with a seeded ``numpy.random.Generator``; the generator state is
checkpointed, so an interrupted search resumes with exactly the actions it would have drawn.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from gymnasium import Env

from prunegym.agents.checkpoint import write_checkpoint
from prunegym.agents.ddpg import num_groups_of
from prunegym.agents.search_config import SearchConfig, resume_point
from prunegym.core.records import EpisodeRecorder, ProgressFn, SearchSummary, policy_template_of

__all__ = ["run_random_search"]

log = logging.getLogger(__name__)


def run_random_search(
    *,
    env: Env,
    config: SearchConfig,
    run_dir: Path,
    resume: bool = False,
    progress: ProgressFn | None = None,
) -> SearchSummary:
    """Play ``config.episodes`` episodes of uniform random actions; same outputs as ``run_search``.

    Args:
        env: the environment (a gymnasium ``Env`` with a ``Box`` action space)
        config: budget, seed and checkpoint period (``agent`` should be ``"random"``; warm-up is irrelevant)
        run_dir: the run folder.
        resume: continue the search already in ``run_dir``.
        progress: ``progress(episodes_done, total, best_reward)`` after every episode.
    """
    run_dir = Path(run_dir)
    num_groups = num_groups_of(env)
    checkpoint, records = resume_point(run_dir, config=config, resume=resume, num_groups=num_groups)
    rng = np.random.default_rng(config.seed)
    if checkpoint is not None:
        rng.bit_generator.state = checkpoint.state["random_rng"]
    start = len(records)
    recorder = EpisodeRecorder(
        run_dir=run_dir,
        source="agents.random",
        total_episodes=config.episodes,
        records=records,
        progress=progress,
        tensorboard=config.tensorboard,
        policy_template=policy_template_of(env),
    )
    low = np.asarray(env.action_space.low, dtype=np.float64)
    high = np.asarray(env.action_space.high, dtype=np.float64)
    dtype = env.action_space.dtype
    last_checkpoint = start
    base_state = {"config": config.to_dict(), "num_groups": num_groups}

    def save() -> None:
        state = {**base_state, "best_reward": recorder.best_reward, "random_rng": rng.bit_generator.state}
        write_checkpoint(run_dir, episodes_done=recorder.episodes_done, state=state)

    try:
        _, info = env.reset(seed=config.seed)
        while recorder.episodes_done < config.episodes:
            terminated = truncated = False
            while not (terminated or truncated):
                action = rng.uniform(low, high).astype(dtype)
                _, _, terminated, truncated, info = env.step(action)
            recorder.record(info, sigma=None)
            if recorder.episodes_done - last_checkpoint >= config.checkpoint_every:
                save()
                last_checkpoint = recorder.episodes_done
            if recorder.episodes_done < config.episodes:
                env.reset()
        if recorder.episodes_done > last_checkpoint:
            save()
    finally:
        recorder.close()
    return recorder.summary(agent="random", resumed_from=start)
