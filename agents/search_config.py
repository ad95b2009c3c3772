"""The search's settings, and where a (resumed) search starts from."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunegym.core.errors import ConfigError, UserError
from prunegym.core.records import truncate_episodes
from prunegym.core.run_folder import EPISODES_FILE

if TYPE_CHECKING:  # the checkpoint code (torch, SB3) loads in resume_point, so the CLI parses without it
    from prunegym.agents.checkpoint import SearchCheckpoint

__all__ = ["AGENT_NAMES", "SEARCH_AGENTS", "SearchConfig", "resume_point"]

log = logging.getLogger(__name__)

AGENT_NAMES: tuple[str, ...] = ("ddpg", "td3", "sac", "ppo")  # the stable-baselines3 agents
SEARCH_AGENTS: tuple[str, ...] = (*AGENT_NAMES, "random")
# Settings that must not change between a checkpoint and its resume (the episode budget may grow).
_FIXED_ON_RESUME = ("agent", "seed", "warmup_episodes")
# With the budget-tied decay, σ at the last episode is this fraction of σ at the first agent episode.
BUDGET_SIGMA_FALL = 0.1


@dataclass(frozen=True)
class SearchConfig:
    """Settings of one search run (saved inside every checkpoint).

    Args:
        agent: ddpg (AMC), td3, sac, ppo or random.
        episodes: episode budget; one episode = one pruned and evaluated candidate (AMC: 300-800).
        warmup_episodes: episodes of uniform random actions before the agent acts (AMC: 100).
        seed: seeds every RNG of the agent, the env's first reset and the evaluator.
        checkpoint_every: checkpoint the agent every this many episodes (and at the end).
        device: PyTorch device of the agent's networks.
        tensorboard: write TensorBoard events under RUN/tensorboard.
        sigma_decay: DDPG's exploration σ = 0.5·sigma_decay^(episode − warm-up); empty (the default) ties the
            decay to the budget, so σ falls from 0.5 to 0.05 over the agent's episodes; AMC used 0.95
            (BENCHMARKS.md has the comparison).
    """

    agent: str = "ddpg"
    episodes: int = 300
    warmup_episodes: int = 100
    seed: int = 0
    checkpoint_every: int = 10
    device: str = field(default="cpu", metadata={"option": False})
    tensorboard: bool = True
    sigma_decay: float | None = None

    def __post_init__(self) -> None:
        if self.agent not in SEARCH_AGENTS:
            raise ConfigError(f"unknown agent '{self.agent}'; choose one of {', '.join(SEARCH_AGENTS)}")
        if self.episodes < 1:
            raise ConfigError(f"episodes is {self.episodes}; use at least 1 (AMC searches 300-800)")
        if self.warmup_episodes < 0:
            raise ConfigError(f"warmup_episodes is {self.warmup_episodes}; use 0 or more (AMC: 100)")
        if self.sigma_decay is not None and not 0.0 < self.sigma_decay <= 1.0:
            raise ConfigError(f"sigma_decay is {self.sigma_decay}; use a factor in (0, 1] (AMC: 0.95)")
        if self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every is {self.checkpoint_every}; use 1 or more episodes")
        if self.agent != "random" and self.agent != "ppo" and self.warmup_episodes >= self.episodes:
            log.warning(
                "warmup_episodes=%d >= episodes=%d: every episode is random, the agent never acts",
                self.warmup_episodes,
                self.episodes,
            )

    @property
    def exploration_decay(self) -> float:
        """The per-episode σ decay in use: ``sigma_decay``, or the one that reaches 0.1·σ₀ at the budget's end."""
        if self.sigma_decay is not None:
            return self.sigma_decay
        return BUDGET_SIGMA_FALL ** (1.0 / max(1, self.episodes - self.warmup_episodes))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resume_point(
    run_dir: Path, *, config: SearchConfig, resume: bool, num_groups: int
) -> tuple[SearchCheckpoint | None, list[dict[str, Any]]]:
    """The checkpoint to continue from (``None``: start afresh) and the ``episodes.jsonl`` records kept.

    Without ``resume`` the folder must hold no search yet. With ``resume``, lines after the last checkpoint are
    dropped (they will be played again), and the checkpoint must come from the same agent, seed, warm-up and
    number of groups; the episode budget may grow.
    """
    from prunegym.agents.checkpoint import CHECKPOINTS_DIR, read_latest_checkpoint

    run_dir = Path(run_dir)
    checkpoint = read_latest_checkpoint(run_dir)
    episodes_path = run_dir / EPISODES_FILE
    if not resume:
        if checkpoint is not None or (episodes_path.exists() and episodes_path.stat().st_size > 0):
            raise UserError(
                f"{run_dir} already holds a search ({EPISODES_FILE} or {CHECKPOINTS_DIR}/); "
                "pass --resume to continue it or choose another --out"
            )
        return None, truncate_episodes(run_dir, keep=0)
    if checkpoint is None:
        log.warning("no checkpoint in %s yet: the search restarts from episode 0", run_dir)
        return None, truncate_episodes(run_dir, keep=0)
    saved = checkpoint.state.get("config", {})
    changed = [k for k in _FIXED_ON_RESUME if saved.get(k) != getattr(config, k)]
    if changed:
        was = ", ".join(f"{k}={saved.get(k)!r}" for k in changed)
        raise ConfigError(f"{run_dir} was searched with {was}; resume with the same values or start a new --out")
    if int(checkpoint.state.get("num_groups", num_groups)) != num_groups:
        raise ConfigError(
            f"{run_dir} was searched over {checkpoint.state['num_groups']} groups, this env has {num_groups}; "
            "resume with the same model and pruning settings"
        )
    return checkpoint, truncate_episodes(run_dir, keep=checkpoint.episodes_done)
