"""prunegym.agents: the search agents (AMC's DDPG on stable-baselines3, stock TD3/SAC/PPO, random search).

Public API, imported lazily so that ``prunegym --help`` does not load stable-baselines3:

- :func:`run_search` / :class:`SearchConfig` / :class:`SearchSummary`: run, checkpoint and resume a search;
- :func:`make_agent` (by name) and :func:`make_amc_ddpg` / :class:`AMCDDPG`: the agents themselves;
- :func:`run_random_search`: the random-search baseline with the same records;
- :func:`plot_search_curve` / :func:`plot_policy`: figures of a run.
"""

from __future__ import annotations

from prunegym.core.lazy import lazy_attributes

__all__ = [
    "AGENT_NAMES",
    "AMCDDPG",
    "SEARCH_AGENTS",
    "EpisodeRewardReplayBuffer",
    "SearchConfig",
    "SearchSummary",
    "TruncatedNormalSchedule",
    "make_agent",
    "make_amc_ddpg",
    "plot_policy",
    "plot_search_curve",
    "run_random_search",
    "run_search",
]

_WHERE = {
    "AGENT_NAMES": "search_config",
    "AMCDDPG": "ddpg",
    "SEARCH_AGENTS": "search_config",
    "EpisodeRewardReplayBuffer": "buffer",
    "SearchConfig": "search_config",
    "SearchSummary": "prunegym.core.records",
    "TruncatedNormalSchedule": "noise",
    "make_agent": "algorithms",
    "make_amc_ddpg": "ddpg",
    "plot_policy": "plots",
    "plot_search_curve": "plots",
    "run_random_search": "random_search",
    "run_search": "runner",
}


__getattr__ = lazy_attributes(__name__, _WHERE)
