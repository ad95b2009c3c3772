"""An Optuna worker's run-folder outputs, in the agents' format: ``episodes.jsonl``, ``best_policy.yaml``, TensorBoard.

The study storage is the truth; these files are this worker's view of it. Every finished trial (COMPLETE or
PRUNED) that this worker ran becomes one ``episodes.jsonl`` line with the keys of
:data:`prunegym.core.records.RECORD_KEYS` (``episode`` = the trial number, so numbers have gaps when several
workers share a study) plus ``trial_state``, ``constraint`` (the budget excess, feasible when ≤ 0) and, for pruned
trials, ``pruned_step``. A pruned trial has ``reward`` and ``accuracy`` null. The line is written from the trial as
stored, after Optuna has committed it; a line lost to a crash in between is restored on the next start
(:meth:`TrialRecorder.sync`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from prunegym.core.errors import UserError
from prunegym.core.io import append_jsonl, atomic_write_text, read_jsonl
from prunegym.core.policy import Policy
from prunegym.core.records import RECORD_KEYS, ProgressFn, best_record, episode_record, feasible
from prunegym.core.run_folder import BEST_POLICY_FILE, EPISODES_FILE, RunRecorder

__all__ = [
    "FINISHED",
    "METRIC_ATTRS",
    "TrialRecorder",
    "feasible",
    "trial_policy",
    "trial_record",
]

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
METRIC_ATTRS = ("reward", "accuracy", "top5", "macs_ratio", "params_ratio", "latency_ms", "latency_ratio")
BUDGET = "budget"


def trial_policy(trial: FrozenTrial) -> Policy:
    """The policy a trial evaluated (ratios after the action wall), with its figures and trial number."""
    data = trial.user_attrs.get("policy")
    if not isinstance(data, Mapping):
        raise UserError(f"trial {trial.number} carries no policy; it was not written by prunegym optuna run")
    return Policy.from_dict(data, source=f"trial {trial.number}")


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """The ``episodes.jsonl`` line of a finished trial."""
    attrs = trial.user_attrs
    policy = trial_policy(trial)
    ratios = dict(policy.ratios)
    constraint = trial.constraints.get(BUDGET)
    if trial.state == TrialState.COMPLETE:
        info = {k: attrs.get(k) for k in METRIC_ATTRS}
        info.update(
            policy=ratios,
            removed=list(policy.removed),
            episode_actions=list(ratios.values()),
            seconds=attrs.get("seconds") or {},
        )
        record = episode_record(episode=trial.number, info=info, sigma=None)
    elif trial.state == TrialState.PRUNED:
        seconds = trial.duration.total_seconds() if trial.duration is not None else None
        record = dict.fromkeys(RECORD_KEYS)
        record.update(
            episode=trial.number,
            policy=ratios,
            removed=list(policy.removed),
            actions=list(ratios.values()),
            seconds={} if seconds is None else {"total": seconds},
        )
        record["pruned_step"] = trial.last_step
    else:
        raise ValueError(f"trial {trial.number} is {trial.state.name}, not finished")
    record["trial_state"] = trial.state.name
    record["constraint"] = None if constraint is None else float(constraint)
    return record


class TrialRecorder(RunRecorder):
    """Writes this worker's finished trials (an Optuna ``callbacks`` entry).

    Args:
        run_dir: the run folder.
        worker: this worker's id (trial user attribute ``worker``); other workers' trials are ignored.
        total: this worker's trial budget, for ``progress``.
        progress: ``progress(trials_done, total, best_reward)`` after every recorded trial.
        tensorboard: write scalars under ``run_dir/tensorboard/optuna`` (step = trial number).
    """

    def __init__(
        self,
        *,
        run_dir: Path,
        worker: str,
        total: int,
        progress: ProgressFn | None = None,
        tensorboard: bool = True,
    ) -> None:
        super().__init__(run_dir=run_dir, total=total, tensorboard=tensorboard, tensorboard_dir="optuna")
        self.worker = worker
        self.progress = progress
        self.records: list[dict[str, Any]] = []

    @property
    def path(self) -> Path:
        return self.run_dir / EPISODES_FILE

    def sync(self, trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
        """Make ``episodes.jsonl`` hold exactly this worker's finished ``trials`` (adding lines a crash lost).

        Raises:
            UserError: the file names trials the study does not hold as finished by this worker.
        """
        records = read_jsonl(self.path)
        numbers = [int(r["episode"]) for r in records]
        finished = {t.number: t for t in trials if t.state in FINISHED and t.user_attrs.get("worker") == self.worker}
        unknown = sorted(set(numbers) - set(finished))
        if unknown or len(set(numbers)) != len(numbers):
            what = f"trials {unknown[:5]} the study does not hold" if unknown else "a trial twice"
            raise UserError(f"{self.path} names {what}; it belongs to another study: use a new --out")
        missing = sorted(set(finished) - set(numbers))
        restored = [trial_record(finished[n]) for n in missing]
        if restored:
            log.info("restoring %d trial line(s) missing from %s", len(restored), self.path)
        self.records = [*records, *restored]
        text = "".join(json.dumps(r) + "\n" for r in self.records)
        if (self.path.read_text(encoding="utf-8") if self.path.exists() else "") != text:
            atomic_write_text(self.path, text)  # also drops a torn last line left by a crash
        self.best = best_record(self.records)
        self.write_best_policy(list(finished.values()))
        for rec in restored:
            self._write_tensorboard(rec)
        return self.records

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state in FINISHED and trial.user_attrs.get("worker") == self.worker:
            self.record(trial)

    def record(self, trial: FrozenTrial) -> dict[str, Any]:
        record = trial_record(trial)
        append_jsonl(self.path, record)
        self.records.append(record)
        if best_record([record]) is not None and (self.best is None or record["reward"] > self.best["reward"]):
            self.best = record
            trial_policy(trial).save(self.run_dir / BEST_POLICY_FILE)
            log.info("trial %d: new best reward %.4f", trial.number, record["reward"])
        self._write_tensorboard(record)
        if self.progress is not None:
            self.progress(len(self.records), self.total, self.best_reward)
        return record

    def write_best_policy(self, trials: Sequence[FrozenTrial]) -> None:
        """Make ``best_policy.yaml`` the policy of the best record (or remove it when there is none)."""
        path = self.run_dir / BEST_POLICY_FILE
        if self.best is None:
            path.unlink(missing_ok=True)
            return
        number = int(self.best["episode"])
        if path.exists():
            try:
                if Policy.load(path).trial == number:
                    return
            except UserError:
                pass
        trial = next(t for t in trials if t.number == number)
        trial_policy(trial).save(path)

    def _write_tensorboard(self, record: Mapping[str, Any]) -> None:
        if self._writer is None:
            return
        step = int(record["episode"])
        best = self.best
        scalars = {
            **{
                f"trial/{k}": record.get(k)
                for k in (
                    "reward",
                    "accuracy",
                    "macs_ratio",
                    "params_ratio",
                    "latency_ms",
                    "latency_ratio",
                    "constraint",
                )
            },
            "trial/pruned": float(record.get("trial_state") == "PRUNED"),
            "best/reward": None if best is None else best["reward"],
            "best/accuracy": None if best is None else best.get("accuracy"),
            "best/macs_ratio": None if best is None else best.get("macs_ratio"),
            "best/latency_ms": None if best is None else best.get("latency_ms"),
        }
        self.write_scalars(scalars, step=step, ratios=list(record["policy"].values()), ratios_tag="trial/ratios")
