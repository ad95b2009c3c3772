"""``prunegym iterate``: the DeePhi loop of rounds (prune to a growing rate, finetune, repeat), resumable.

**How rounds compose** (:func:`iterate_rounds`). ``apply_policy`` on an already pruned model records only that
step, so rounds *compose* policies: round k's rate (a cumulative fraction of the ORIGINAL model's MACs) gives a
policy over the original groups, hence target channel counts ``K_g``; the previous round's finetuned dense model
keeping ``m_g`` channels is pruned by ``1 - K_g / m_g`` (round_to 1, so exactly ``K_g`` remain, chosen by the
criterion on the finetuned weights), and the saved record is the composed policy ``{g: 1 - K_g / n_g}`` (round_to
1) of the original model, checked to rebuild the same shapes with ``apply_policy_structure``. So every round's
``model.pt`` is a plain prunegym model that reloads with identical outputs. A group never grows back: ``K_g`` is
capped at ``m_g``. Finetuning runs on the smaller dense model (equivalent to finetuning the masked model with
persistent masks, at a fraction of the cost).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from torch import nn

from prunegym.core.checkpoint import load_model, read_checkpoint, save_model
from prunegym.core.data import DataSplits
from prunegym.core.errors import UserError
from prunegym.core.evaluate import EvalResult, evaluate, input_norm
from prunegym.core.io import write_json
from prunegym.core.models import build_model, model_info
from prunegym.core.policy import Policy
from prunegym.core.pruning import apply_policy, apply_policy_structure, kept_channels
from prunegym.core.run_folder import LAST_CHECKPOINT, MODEL_FILE
from prunegym.core.stats import ModelStats, model_stats
from prunegym.core.train import train
from prunegym.workflow.configs import IterateConfig
from prunegym.workflow.evaluation import calib_batches, recalibrated
from prunegym.workflow.summary import summarize
from prunegym.workflow.tracing import traced_cost_table

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int, dict[str, float]], None]


@dataclass(frozen=True)
class RoundResult:
    """One round of :func:`iterate_rounds` (ratios are of the ORIGINAL model's figures)."""

    round: int
    rate: float  # requested fraction of the original MACs removed
    macs: int
    params: int
    ops: int
    macs_removed: float
    params_removed: float
    ops_removed: float
    accuracy_pruned: float  # val top-1 after pruning + BN re-calibration, before finetuning
    accuracy: float  # val top-1 after finetuning
    test_accuracy: float | None
    seconds: float
    accuracy_pruned_top5: float | None = None
    accuracy_top5: float | None = None
    compress_summary: dict[str, Any] | None = None  # the DeePhi summary before the finetune (Summary.to_dict)
    finetune_summary: dict[str, Any] | None = None  # and after it
    skipped: bool = False
    path: str = ""
    model: nn.Module | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (``result.json``), without the model (``asdict`` would deep-copy it)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model", "skipped")}

    def line(self) -> str:
        """The one-line report of the round, as the DeePhi tools print it."""
        test = f", {self.test_accuracy:.2f}% test" if self.test_accuracy is not None else ""
        return (
            f"After round {self.round}: -{100 * self.ops_removed:.1f}% operations, "
            f"-{100 * self.params_removed:.1f}% weights, top-1 {self.accuracy:.2f}% val{test}"
        )


@dataclass(frozen=True, eq=False)
class _Run:
    """What every round of one :func:`iterate_rounds` call shares."""

    data: DataSplits
    config: IterateConfig
    shape: tuple[int, int, int]
    channels: Mapping[str, int]  # group -> channels of the original model
    base_stats: ModelStats
    base_val: EvalResult
    name: str
    teacher: nn.Module | None
    progress: ProgressFn | None


def _kept_counts(policy: Policy, channels: Mapping[str, int]) -> dict[str, int]:
    """Channels each group keeps under ``policy``."""
    return {g: kept_channels(n, policy.ratio(g), policy.round_to, name=g) for g, n in channels.items()}


def _composed(base: Policy, kept: Mapping[str, int], channels: Mapping[str, int], **meta: Any) -> Policy:
    """The policy over the original groups that keeps ``kept`` channels (round_to 1, no metrics)."""
    ratios = {g: 1.0 - kept[g] / n for g, n in channels.items() if kept[g] < n}
    return replace(base, ratios=ratios, round_to=1, metrics={}, **meta)


def _prune_to(
    current: nn.Module,
    *,
    kept_now: Mapping[str, int],
    kept_next: Mapping[str, int],
    input_shape: tuple[int, int, int],
    criterion: str,
    calib: list | None,
) -> nn.Module:
    """A copy of ``current`` pruned from ``kept_now`` to ``kept_next`` channels per group (round_to 1)."""
    ratios = {g: 1.0 - kept_next[g] / m for g, m in kept_now.items() if kept_next[g] < m}
    return apply_policy(
        current, Policy(ratios=ratios, round_to=1), input_shape=input_shape, criterion=criterion, calib=calib
    )


def _val(model: nn.Module, data: DataSplits) -> EvalResult:
    """Top-1 and top-5 on the val split (carved from the training set)."""
    mean, std = input_norm(model, mean=data.mean, std=data.std)
    return evaluate(model, data.val_x, data.val_y, mean=mean, std=std, batch_size=500)


def _round_summary(run: _Run, stats: ModelStats, val: EvalResult, *, note: str) -> dict[str, Any]:
    """The DeePhi summary (original model → this round's) in the run's counting convention, as a record."""
    summary = summarize(
        baseline=run.base_stats,
        compressed=stats,
        input_shape=run.shape,
        baseline_accuracy=run.base_val.top1,
        compressed_accuracy=val.top1,
        baseline_top5=run.base_val.top5,
        compressed_top5=val.top5,
        accuracy_note=note,
        convention=run.config.convention,
    )
    return summary.to_dict()


def check_finished_rounds(run_dir: Path, rates: Sequence[float]) -> int:
    """How many leading rounds in ``run_dir`` are finished.

    Args:
        run_dir: the run folder.
        rates: the requested rates, one per round.

    Returns:
        The number of leading rounds with a ``result.json``.

    Raises:
        UserError: a finished round was run with another rate.
    """
    finished = 0
    for k, rate in enumerate(rates, start=1):
        done = Path(run_dir) / f"round_{k}" / "result.json"
        if not done.exists():
            break
        recorded = float(json.loads(done.read_text(encoding="utf-8"))["rate"])
        if abs(recorded - rate) > 1e-9:
            raise UserError(
                f"{done.parent} was run with rate {recorded}, not {rate}; keep the first rates of --rates "
                "or use a new --out"
            )
        finished = k
    return finished


def _reload_round(round_dir: Path, channels: Mapping[str, int]) -> tuple[RoundResult, dict[str, int]]:
    """The finished round in ``round_dir`` (``skipped``, with its model) and its kept channel counts."""
    record = json.loads((round_dir / "result.json").read_text(encoding="utf-8"))
    current = load_model(str(round_dir / MODEL_FILE))
    saved = Policy.from_dict(read_checkpoint(round_dir / MODEL_FILE)["policy"])
    fields_ = {f: record[f] for f in RoundResult.__dataclass_fields__ if f in record}
    return RoundResult(**{**fields_, "skipped": True, "model": current}), _kept_counts(saved, channels)


def _pruned_for_round(
    run: _Run, *, k: int, planned: Policy, current: nn.Module, kept_now: Mapping[str, int]
) -> tuple[nn.Module, Policy, dict[str, int]]:
    """Round k's pruned model (carrying the composed record), the composed policy and the kept channel counts."""
    cfg, shape, channels = run.config, run.shape, run.channels
    kept_next = {g: min(n, kept_now[g]) for g, n in _kept_counts(planned, channels).items()}
    calib = calib_batches(current, run.data, criterion=cfg.criterion, batches=cfg.calib_batches, seed=cfg.seed)
    pruned = _prune_to(
        current, kept_now=kept_now, kept_next=kept_next, input_shape=shape, criterion=cfg.criterion, calib=calib
    )
    composed = _composed(
        planned,
        kept_next,
        channels,
        source="iterate",
        model=planned.model or run.name,
        criterion=cfg.criterion,
        input_shape=shape,
    )
    record = composed.to_dict()
    rebuilt = apply_policy_structure(
        build_model(run.name, num_classes=run.data.num_classes, in_channels=run.data.in_channels), record
    )
    want = {k2: tuple(v.shape) for k2, v in pruned.state_dict().items()}
    if {k2: tuple(v.shape) for k2, v in rebuilt.state_dict().items()} != want:  # pragma: no cover
        raise RuntimeError(f"round {k}: the composed policy does not rebuild the pruned shapes")
    pruned.prunegym_policy = record  # type: ignore[assignment]
    return pruned, composed, kept_next


def _run_round(
    run: _Run,
    *,
    k: int,
    rate: float,
    planned: Policy,
    current: nn.Module,
    kept_now: Mapping[str, int],
    round_dir: Path,
) -> tuple[RoundResult, dict[str, int]]:
    """Prune, re-calibrate, finetune and save round k; its result and kept channel counts."""
    cfg, shape, base = run.config, run.shape, run.base_stats
    t0 = time.perf_counter()
    pruned, composed, kept_next = _pruned_for_round(run, k=k, planned=planned, current=current, kept_now=kept_now)
    record = pruned.prunegym_policy
    recalibrated(pruned, run.data, images=cfg.bn_recalib_images, seed=cfg.seed)
    stats = model_stats(pruned, input_shape=shape)
    val_pruned = _val(pruned, run.data)
    n = len(run.data.val_y)
    compress = _round_summary(
        run, stats, val_pruned, note=f"val top-1/top-5 (n={n}) after pruning + BN re-calibration, before finetuning"
    )
    log.info(
        "round %d pruned: val top-1 %.2f%% top-5 %.2f%%, %.3f operations, %.3f weights (before finetuning)",
        k,
        val_pruned.top1,
        val_pruned.top5,
        -compress["ops_reduction"],
        -compress["params_reduction"],
    )
    ft_dir = round_dir / "finetune"
    trained = train(
        config=cfg.train_config(ft_dir, teacher=run.teacher is not None),
        model=pruned,
        data=run.data,
        run_dir=ft_dir,
        teacher=run.teacher,
        policy=record,
        resume=(ft_dir / LAST_CHECKPOINT).exists(),
        progress=run.progress,
    )
    val_ft = _val(pruned, run.data)  # the best epoch's weights, reloaded by train()
    result = RoundResult(
        round=k,
        rate=rate,
        macs=stats.macs,
        params=stats.weights(cfg.convention),
        ops=stats.operations(cfg.convention),
        macs_removed=1 - stats.macs / base.macs,
        params_removed=1 - stats.weights(cfg.convention) / base.weights(cfg.convention),
        ops_removed=1 - stats.operations(cfg.convention) / base.operations(cfg.convention),
        accuracy_pruned=val_pruned.top1,
        accuracy=trained.best_val.top1,
        test_accuracy=trained.test.top1 if trained.test else None,
        accuracy_pruned_top5=val_pruned.top5,
        accuracy_top5=val_ft.top5,
        compress_summary=compress,
        finetune_summary=_round_summary(run, stats, val_ft, note=f"val top-1/top-5 (n={n}) after the finetune"),
        seconds=time.perf_counter() - t0,
        path=str(round_dir / MODEL_FILE),
        model=pruned,
    )
    composed.with_metrics(macs_ratio=stats.macs / base.macs, params_ratio=stats.params / base.params).save(
        round_dir / "policy.yaml"
    )
    save_model(round_dir / MODEL_FILE, model=pruned, policy=record, extra={"input_shape": list(shape)})
    write_json(round_dir / "result.json", result.to_dict())
    log.info("%s", result.line())
    return result, kept_next


def iterate_rounds(
    *,
    model: nn.Module,
    data: DataSplits,
    config: IterateConfig,
    policies: Sequence[Policy],
    input_shape: tuple[int, int, int],
    run_dir: Path,
    teacher: nn.Module | None = None,
    progress: ProgressFn | None = None,
    on_round: Callable[[RoundResult], None] | None = None,
) -> list[RoundResult]:
    """Run the rounds of ``config.rates`` (see the module docstring for how rounds compose).

    Round k lives in ``run_dir/round_{k+1}/`` (``policy.yaml``, ``model.pt``, ``finetune/``, ``result.json``
    written last). A round whose ``result.json`` exists is skipped and its model reloaded, so an interrupted run
    resumes at the first unfinished round (and within it, at the finetune's last epoch).

    Args:
        model: the unpruned model.
        data: the dataset (finetune on train, scores on val).
        config: the ``iterate`` options.
        policies: ``policies[k]`` holds round k's ratios over ``model``'s groups, one per rate.
        input_shape: ``(C, H, W)`` of one input.
        run_dir: the run folder.
        teacher: distill every round's finetune from this model (None: no distillation).
        progress: ``progress(phase, done, total, metrics)`` during each finetune.
        on_round: called with each round's result (finished or reloaded).

    Returns:
        One :class:`RoundResult` per rate.

    Raises:
        ValueError: not one policy per rate.
        UserError: ``model`` is already pruned, or a finished round was run with another rate.
    """
    if len(policies) != len(config.rates):
        raise ValueError("one policy per rate")
    shape = tuple(input_shape)
    run_dir = Path(run_dir)
    if Policy.from_dict(getattr(model, "prunegym_policy", None) or {"ratios": {}}).cache_key():
        raise UserError("iterate starts from an unpruned model; pass the base model and its weights, not a pruned one")
    channels = dict(traced_cost_table(model, input_shape=shape).channels)
    check_finished_rounds(run_dir, config.rates)
    info = model_info(model)
    run = _Run(
        data=data,
        config=config,
        shape=shape,
        channels=channels,
        base_stats=model_stats(model, input_shape=shape),
        base_val=_val(model, data),
        name=info.name if info else config.model,
        teacher=teacher,
        progress=progress,
    )
    current, kept_now = model, dict(channels)
    results: list[RoundResult] = []
    for k, (rate, planned) in enumerate(zip(config.rates, policies, strict=True), start=1):
        round_dir = run_dir / f"round_{k}"
        if (round_dir / "result.json").exists() and (round_dir / MODEL_FILE).exists():
            result, kept_now = _reload_round(round_dir, channels)
            log.info("round %d already done (%s); skipping", k, round_dir)
        else:
            result, kept_now = _run_round(
                run, k=k, rate=rate, planned=planned, current=current, kept_now=kept_now, round_dir=round_dir
            )
        current = result.model
        results.append(result)
        if on_round is not None:
            on_round(result)
    return results
