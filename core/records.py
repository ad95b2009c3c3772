"""What a search writes per finished episode, shared by the RL agents, random search and the Optuna study.

One line per episode in ``episodes.jsonl`` (keys :data:`RECORD_KEYS`), TensorBoard scalars indexed by episode
under ``tensorboard/search``, and ``best_policy.yaml`` rewritten atomically whenever the reward improves.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from prunegym.core.io import append_jsonl, atomic_write_text, read_jsonl
from prunegym.core.policy import Policy
from prunegym.core.run_folder import BEST_POLICY_FILE, EPISODES_FILE, RunRecorder

__all__ = [
    "RECORD_KEYS",
    "EpisodeRecorder",
    "ProgressFn",
    "SearchSummary",
    "best_record",
    "episode_record",
    "feasible",
    "truncate_episodes",
]

log = logging.getLogger(__name__)

RECORD_KEYS: tuple[str, ...] = (
    "episode",
    "reward",
    "accuracy",
    "macs_ratio",
    "params_ratio",
    "latency_ms",
    "latency_ratio",
    "sigma",
    "seconds",
    "policy",
    "removed",
    "actions",
)
_METRIC_KEYS = ("macs_ratio", "params_ratio", "latency_ms", "latency_ratio")

ProgressFn = Callable[[int, int, float | None], None]
"""``progress(episodes_done, total_episodes, best_reward)``, called after every finished episode."""


@dataclass(frozen=True)
class SearchSummary:
    """Outcome of :func:`~prunegym.agents.runner.run_search`.

    Args:
        run_dir: the run folder.
        agent: agent name (``ddpg``, ``td3``, ``sac``, ``ppo``, ``random``)
        episodes: episodes recorded in ``episodes.jsonl``.
        resumed_from: episodes restored from a checkpoint (0 for a fresh run)
        best_episode: 0-based episode of the best reward (``None`` before any episode)
        best_reward: the best reward.
        best_policy: that episode's ``{group: ratio}``.
    """

    run_dir: Path
    agent: str
    episodes: int
    resumed_from: int
    best_episode: int | None
    best_reward: float | None
    best_policy: Mapping[str, float] | None


def _plain(value: Any) -> Any:
    """A JSON-safe copy: NumPy scalars/arrays to Python, mappings to dicts, a Policy to its ratios."""
    if isinstance(value, Policy):
        return {k: float(v) for k, v in value.ratios.items()}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def policy_template_of(env: Any) -> Policy | None:
    """The env's policy metadata (model, round_to, criterion, input_shape), if it offers any."""
    make = getattr(getattr(env, "unwrapped", env), "policy_template", None)
    return make() if callable(make) else None


def episode_record(*, episode: int, info: Mapping[str, Any], sigma: float | None) -> dict[str, Any]:
    """The ``episodes.jsonl`` line for a finished episode from the env's final ``info``."""
    missing = [k for k in ("policy", "reward") if k not in info]
    if missing:
        raise KeyError(
            f"the final step's info lacks {missing}; the env must report 'policy' and 'reward' when terminated"
        )
    return {
        "episode": int(episode),
        "reward": float(info["reward"]),
        "accuracy": _plain(info.get("accuracy")),
        "macs_ratio": _plain(info.get("macs_ratio")),
        "params_ratio": _plain(info.get("params_ratio")),
        "latency_ms": _plain(info.get("latency_ms")),
        "latency_ratio": _plain(info.get("latency_ratio")),
        "sigma": sigma,
        "seconds": _plain(info.get("seconds") or {}),
        "policy": _plain(info["policy"]),
        "removed": list(info.get("removed") or []),
        "actions": _plain(info.get("episode_actions") or []),
    }


def feasible(record: Mapping[str, Any]) -> bool:
    """A record within the budget (records without a ``constraint``, e.g. the agents', count as feasible)."""
    c = record.get("constraint")
    return c is None or c <= 0.0


def best_record(records: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The feasible record with the highest finite reward (the earliest on ties), or ``None``."""
    best = None
    for rec in records:
        reward = rec.get("reward")
        if reward is None or not math.isfinite(reward) or not feasible(rec):
            continue
        if best is None or reward > best["reward"]:
            best = rec
    return best


def truncate_episodes(run_dir: Path, *, keep: int) -> list[dict[str, Any]]:
    """Drop ``episodes.jsonl`` lines of episodes ``>= keep`` (atomically) and return the kept records.

    Used on resume: lines written after the last checkpoint belong to episodes that will be played again.
    """
    path = Path(run_dir) / EPISODES_FILE
    records = read_jsonl(path)
    kept = [r for r in records if int(r["episode"]) < keep]
    numbers = [int(r["episode"]) for r in kept]
    if numbers != list(range(keep)):
        raise ValueError(
            f"{path} holds episodes {numbers[:3]}...{numbers[-3:]} but the checkpoint has {keep}; "
            "the run folder was edited or mixes runs: start a new run folder"
        )
    if len(kept) != len(records):
        log.info("resume: dropping %d episode line(s) recorded after the last checkpoint", len(records) - len(kept))
    if path.exists():
        text = "".join(json.dumps(r) + "\n" for r in kept)
        if path.read_text(encoding="utf-8") != text:  # also drops a torn last line left by a crash
            atomic_write_text(path, text)
    return kept


class EpisodeRecorder(RunRecorder):
    """Writes every finished episode: JSONL line, TensorBoard scalars, best policy, progress callback.

    Args:
        run_dir: the run folder.
        source: policy source written into ``best_policy.yaml`` (``agents.ddpg``, ``agents.random``).
        total_episodes: episode budget, for ``progress``.
        records: records already in ``episodes.jsonl`` (on resume), to continue numbering and the best reward.
        progress: called as ``progress(episodes_done, total_episodes, best_reward)`` after every episode.
        tensorboard: write TensorBoard events under ``run_dir/tensorboard/search``.
        policy_template: the env's policy metadata (model, round_to, criterion, input_shape) for
            ``best_policy.yaml``.
    """

    def __init__(
        self,
        *,
        run_dir: Path,
        source: str,
        total_episodes: int,
        records: Sequence[Mapping[str, Any]] = (),
        progress: ProgressFn | None = None,
        tensorboard: bool = True,
        policy_template: Policy | None = None,
    ) -> None:
        # purge_step hides the events of episodes dropped on resume
        super().__init__(
            run_dir=run_dir,
            total=total_episodes,
            tensorboard=tensorboard,
            tensorboard_dir="search",
            purge_step=len(records),
        )
        self.source = source
        self.progress = progress
        self.episodes_done = len(records)
        best = best_record(records)
        self.best: dict[str, Any] | None = dict(best) if best is not None else None
        self._policy_template: Policy | None = policy_template
        self._sync_best_policy_file()

    def record(self, info: Mapping[str, Any], *, sigma: float | None) -> dict[str, Any]:
        """Write episode number :attr:`episodes_done` from its final ``info``; return the JSONL record."""
        record = episode_record(episode=self.episodes_done, info=info, sigma=sigma)
        if isinstance(info.get("policy"), Policy):
            self._policy_template = info["policy"]
        append_jsonl(self.run_dir / EPISODES_FILE, record)
        self.episodes_done += 1
        improved = math.isfinite(record["reward"]) and (self.best is None or record["reward"] > self.best["reward"])
        if improved:
            self.best = record
            self._save_best_policy(record)
            log.info("episode %d: new best reward %.4f", record["episode"], record["reward"])
        self._write_tensorboard(record)
        if self.progress is not None:
            self.progress(self.episodes_done, self.total, self.best_reward)
        return record

    def summary(self, *, agent: str, resumed_from: int) -> SearchSummary:
        best = self.best
        return SearchSummary(
            run_dir=self.run_dir,
            agent=agent,
            episodes=self.episodes_done,
            resumed_from=resumed_from,
            best_episode=None if best is None else int(best["episode"]),
            best_reward=None if best is None else float(best["reward"]),
            best_policy=None if best is None else dict(best["policy"]),
        )

    # ------------------------------------------------------------------ internals

    def _policy_for(self, record: Mapping[str, Any]) -> Policy:
        metrics = {k: float(record[k]) for k in _METRIC_KEYS if record.get(k) is not None}
        meta = {
            "source": self.source,
            "reward": record["reward"],
            "accuracy": record.get("accuracy"),
            "episode": int(record["episode"]),
            "metrics": metrics,
        }
        template = self._policy_template
        if template is None and (self.run_dir / BEST_POLICY_FILE).exists():
            template = Policy.load(self.run_dir / BEST_POLICY_FILE)  # keeps model/round_to/input_shape on resume
        removed = tuple(record.get("removed") or ())
        if template is not None:
            return replace(template, ratios=dict(record["policy"]), removed=removed, **meta)
        return Policy(ratios=dict(record["policy"]), removed=removed, **meta)

    def _save_best_policy(self, record: Mapping[str, Any]) -> None:
        self._policy_for(record).save(self.run_dir / BEST_POLICY_FILE)

    def _sync_best_policy_file(self) -> None:
        """On resume, make ``best_policy.yaml`` agree with the kept records (it may name a dropped episode)."""
        path = self.run_dir / BEST_POLICY_FILE
        if not path.exists():
            if self.best is not None:
                self._save_best_policy(self.best)
            return
        saved = Policy.load(path)
        if self.best is None:
            path.unlink()
        elif saved.episode != self.best["episode"] or saved.source != self.source:
            self._save_best_policy(self.best)

    def _write_tensorboard(self, record: Mapping[str, Any]) -> None:
        scalars = {
            "search/reward": record["reward"],
            "search/best_reward": self.best_reward,
            "search/accuracy": record.get("accuracy"),
            "search/sigma": record.get("sigma"),
            **{f"search/{k}": record.get(k) for k in _METRIC_KEYS},
            **{f"seconds/{k}": v for k, v in (record.get("seconds") or {}).items()},
            **{f"actions/{k}": v for k, v in record["policy"].items()},
        }
        self.write_scalars(
            scalars, step=int(record["episode"]), ratios=list(record["policy"].values()), ratios_tag="search/ratios"
        )
