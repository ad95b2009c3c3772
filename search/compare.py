"""``prunegym compare``: agent runs (DDPG, TD3, random, ...) and Optuna runs side by side.

Every search writes ``episodes.jsonl`` (one line per evaluated candidate; see :mod:`prunegym.core.records`), so a
run reduces to: how many candidates it evaluated, the best feasible reward it found and that candidate's figures,
and its best-so-far curve. Runs of the same method (several seeds) are summarized as mean ± sample standard deviation
(``ddof=1``; a single run has no std). A record with ``constraint`` > 0 (over budget, Optuna without the action
wall) never counts as best; a pruned Optuna trial (``reward`` null) counts as an evaluation that found nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from prunegym.core.errors import UserError
from prunegym.core.io import read_jsonl
from prunegym.core.plots import save_png
from prunegym.core.records import best_record, feasible
from prunegym.core.run_folder import BEST_POLICY_FILE, CONFIG_FILE, EPISODES_FILE, STUDY_FILE

__all__ = ["MethodResult", "RunResult", "Stat", "compare_runs", "load_run", "mean_std", "plot_compare", "summarize"]

# config keys that define the problem: runs that differ in them have incomparable rewards
PROBLEM_KEYS = (
    "model",
    "data",
    "target",
    "target_ratio",
    "reward",
    "min_ratio",
    "max_ratio",
    "action_wall",
    "val_size",
    "bn_recalib_images",
    "finetune_steps",
    "criterion",
    "round_to",
    "latency",
)


@dataclass(frozen=True)
class RunResult:
    """One run folder reduced to its best candidate and its best-so-far curve.

    Args:
        curve: best feasible reward after each evaluation (NaN until the first one)
    """

    run: str
    method: str
    seed: int | None
    evaluations: int
    best_episode: int | None
    best_reward: float | None
    best_accuracy: float | None
    best_macs_ratio: float | None
    best_latency_ratio: float | None
    curve: tuple[float, ...]
    problem: Mapping[str, Any]

    @property
    def realization(self) -> float | None:
        """Speed-up ÷ MAC reduction of the best candidate (``macs_ratio / latency_ratio``), when both are known."""
        if not self.best_macs_ratio or not self.best_latency_ratio:
            return None
        return self.best_macs_ratio / self.best_latency_ratio


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (``None`` when undefined) of ``n`` values."""

    mean: float | None
    std: float | None
    n: int

    def fmt(self, digits: int = 4) -> str:
        if self.mean is None:
            return "-"
        return f"{self.mean:.{digits}f}" if self.std is None else f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass(frozen=True)
class MethodResult:
    method: str
    runs: int
    seeds: tuple[int | None, ...]
    evaluations: Stat
    best_reward: Stat
    best_accuracy: Stat
    best_macs_ratio: Stat
    best_latency_ratio: Stat


def mean_std(values: Iterable[float | None]) -> Stat:
    """Mean and sample std (``ddof=1``) of the values that are not ``None``."""
    xs = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    if xs.size == 0:
        return Stat(None, None, 0)
    return Stat(float(xs.mean()), float(xs.std(ddof=1)) if xs.size > 1 else None, int(xs.size))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML; fix or remove it") from exc
    return data if isinstance(data, dict) else {}


def method_of(run_dir: Path) -> tuple[str, int | None]:
    """``(method, seed)`` of a run folder: ``agent`` of an agent run's ``config.yaml``, ``optuna-<sampler>`` (plus
    ``[objectives]`` when not the reward) for an Optuna run, else the best policy's ``source``."""
    config = _read_yaml(run_dir / CONFIG_FILE)
    study = _read_yaml(run_dir / STUDY_FILE)
    seed = config.get("seed", study.get("seed"))
    seed = int(seed) if isinstance(seed, int | float) and not isinstance(seed, bool) else None
    if "agent" in config:
        return str(config["agent"]), seed
    if study.get("method") == "optuna" or config.get("method") == "optuna":
        sampler = study.get("sampler") or config.get("sampler") or "tpe"
        objectives = study.get("objectives") or config.get("objectives") or "reward"
        return f"optuna-{sampler}" + ("" if objectives == "reward" else f"[{objectives}]"), seed
    source = _read_yaml(run_dir / BEST_POLICY_FILE).get("source")
    if isinstance(source, str) and source:
        return source.removeprefix("agents."), seed
    return "unknown", seed


def load_run(path: str | Path) -> RunResult:
    """Reduce one run folder (or its ``episodes.jsonl``) to a :class:`RunResult`."""
    path = Path(path)
    run_dir = path.parent if path.name == EPISODES_FILE else path
    records = read_jsonl(run_dir / EPISODES_FILE)
    if not (run_dir / EPISODES_FILE).exists():
        raise UserError(f"{run_dir} has no {EPISODES_FILE}; pass run folders of `prunegym search` or `optuna run`")
    method, seed = method_of(run_dir)
    best = best_record(records)
    curve, top = [], -math.inf
    for rec in records:
        reward = rec.get("reward")
        if reward is not None and math.isfinite(reward) and feasible(rec):
            top = max(top, float(reward))
        curve.append(top if math.isfinite(top) else math.nan)
    config = _read_yaml(run_dir / CONFIG_FILE)

    def fig(key: str) -> float | None:
        return None if best is None or best.get(key) is None else float(best[key])

    return RunResult(
        run=str(path),
        method=method,
        seed=seed,
        evaluations=len(records),
        best_episode=None if best is None else int(best["episode"]),
        best_reward=fig("reward"),
        best_accuracy=fig("accuracy"),
        best_macs_ratio=fig("macs_ratio"),
        best_latency_ratio=fig("latency_ratio"),
        curve=tuple(curve),
        problem={k: config[k] for k in PROBLEM_KEYS if k in config},
    )


def summarize(runs: Sequence[RunResult]) -> list[MethodResult]:
    """One :class:`MethodResult` per method, in order of first appearance."""
    methods: dict[str, list[RunResult]] = {}
    for r in runs:
        methods.setdefault(r.method, []).append(r)
    return [
        MethodResult(
            method=m,
            runs=len(rs),
            seeds=tuple(r.seed for r in rs),
            evaluations=mean_std(r.evaluations for r in rs),
            best_reward=mean_std(r.best_reward for r in rs),
            best_accuracy=mean_std(r.best_accuracy for r in rs),
            best_macs_ratio=mean_std(r.best_macs_ratio for r in rs),
            best_latency_ratio=mean_std(r.best_latency_ratio for r in rs),
        )
        for m, rs in methods.items()
    ]


def problem_differences(runs: Sequence[RunResult]) -> dict[str, list[Any]]:
    """Problem settings (``PROBLEM_KEYS``) whose values differ between runs that record them."""
    out: dict[str, list[Any]] = {}
    for key in PROBLEM_KEYS:
        values = [r.problem[key] for r in runs if key in r.problem]
        distinct = list(dict.fromkeys(yaml.safe_dump(v) for v in values))
        if len(distinct) > 1:
            out[key] = [yaml.safe_load(v) for v in distinct]
    return out


def compare_runs(
    paths: Sequence[str | Path], *, allow_mixed: bool = False
) -> tuple[list[RunResult], list[MethodResult]]:
    """Load every run and summarize per method.

    Runs whose problems differ (:data:`PROBLEM_KEYS`) have rewards that cannot be averaged: they are refused, or
    with ``allow_mixed`` grouped apart (each method is suffixed with its problem's differing settings).

    Raises:
        UserError: no runs, or runs of different problems without ``allow_mixed``.
    """
    if not paths:
        raise UserError("no run folders given; pass one or more, e.g. runs/ddpg-s0 runs/optuna-s0")
    runs = [load_run(p) for p in paths]
    diffs = problem_differences(runs)
    if diffs and not allow_mixed:
        what = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in diffs.items())
        raise UserError(
            f"these runs solve different problems ({what}), so their rewards are not comparable; compare runs of "
            "one problem, or pass --allow-mixed to group them apart"
        )
    if diffs:
        runs = [replace(r, method=f"{r.method} ({', '.join(f'{k}={r.problem.get(k)}' for k in diffs)})") for r in runs]
    return runs, summarize(runs)


def plot_compare(runs: Sequence[RunResult], *, out: Path, title: str = "") -> Path:
    """Best-so-far reward vs evaluations, one line per run, one colour per method."""
    fig = Figure(figsize=(7.5, 4.5), dpi=120)
    ax = fig.add_subplot()
    colours: dict[str, str] = {}
    for r in runs:
        first = r.method not in colours
        colour = colours.setdefault(r.method, f"C{len(colours) % 10}")
        label = r.method if first else None
        if len(r.curve) == 1:  # a fixed policy (e.g. uniform): one evaluation, drawn as a reference line
            ax.axhline(float(r.curve[0]), color=colour, lw=1.3, ls="--", alpha=0.85, label=label)
            continue
        x = np.arange(1, len(r.curve) + 1)
        ax.step(
            x,
            np.array(r.curve, dtype=np.float64),
            where="post",
            color=colour,
            lw=1.3,
            alpha=0.85,
            label=label,
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best reward so far")
    ax.set_title(title or f"best reward vs evaluations ({len(runs)} runs)")
    ax.grid(alpha=0.3)
    if runs:
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return save_png(fig, Path(out))


def as_dict(runs: Sequence[RunResult], methods: Sequence[MethodResult]) -> dict[str, Any]:
    """JSON-safe form (curves left out)."""

    def stat(s: Stat) -> dict[str, Any]:
        return {"mean": s.mean, "std": s.std, "n": s.n}

    return {
        "runs": [
            {k: v for k, v in vars(r).items() if k != "curve"}
            | {"problem": dict(r.problem), "realization": r.realization}
            for r in runs
        ],
        "methods": [
            {"method": m.method, "runs": m.runs, "seeds": list(m.seeds)}
            | {
                k: stat(getattr(m, k))
                for k in ("evaluations", "best_reward", "best_accuracy", "best_macs_ratio", "best_latency_ratio")
            }
            for m in methods
        ],
    }
