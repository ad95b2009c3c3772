"""The Vitis-AI/DeePhi workflow as library functions: ``prune``, ``transform`` and iterative rounds.

The commands' options are frozen dataclasses here (saved as the run folder's ``config.yaml``); the sensitivity
analysis (``ana``) and the ana-based per-group plan live in :mod:`prunegym.search` (core never imports it: the
CLI hands this module finished :class:`~prunegym.core.policy.Policy` objects).

**Iterative rounds** (:func:`iterate_rounds`). ``apply_policy`` on an already pruned model records only that
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
import math
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunegym.core.checkpoint import (
    CHECKPOINT_FORMAT,
    MODEL_FORMAT,
    extract_state_dict,
    load_model,
    load_weights,
    read_checkpoint,
    rebuild_model,
    save_model,
)
from prunegym.core.data import DataSplits, iterate_batches
from prunegym.core.errors import ConfigError, UserError
from prunegym.core.evaluate import evaluate, input_norm, recalibrate_bn
from prunegym.core.importance import CRITERIA, NEEDS_CALIB
from prunegym.core.io import atomic_write_text, write_json
from prunegym.core.masking import mask_policy, merge_prune_masks, transform
from prunegym.core.models import build_model, model_info
from prunegym.core.policy import Policy
from prunegym.core.pruning import CostTable, apply_policy, apply_policy_structure, cost_table, kept_channels
from prunegym.core.stats import model_stats
from prunegym.core.summary import Summary, summarize
from prunegym.core.train import TrainConfig, train

log = logging.getLogger(__name__)

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MODES = ("dense", "masked")

# ----------------------------------------------------------------------------------------------- configs


def _check_fraction(name: str, value: float, *, closed_low: bool = False) -> None:
    low_ok = value >= 0.0 if closed_low else value > 0.0
    if not (math.isfinite(value) and low_ok and value < 1.0):
        interval = "[0, 1)" if closed_low else "(0, 1)"
        raise ConfigError(f"--{name} {value} is outside {interval}; use a fraction such as 0.5")


def _check_common(*, criterion: str, round_to: int, bn_recalib_images: int, val_size: int | None) -> None:
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown --criterion '{criterion}'; use one of {', '.join(CRITERIA)}")
    if round_to < 1:
        raise ConfigError(f"--round-to must be ≥ 1, got {round_to}")
    if bn_recalib_images < 0:
        raise ConfigError(f"--bn-recalib-images must be ≥ 0, got {bn_recalib_images}")
    if val_size is not None and val_size < 1:
        raise ConfigError(f"--val-size must be ≥ 1, got {val_size}")


def _check_source(*, ana: str | None, uniform: bool, policy: str | None = None) -> None:
    chosen = [name for name, on in (("--ana", ana), ("--uniform", uniform), ("--policy", policy)) if on]
    if len(chosen) != 1:
        what = "none of" if not chosen else "more than one of"
        options = "--ana DIR (from `prunegym ana`), --uniform" + (" or --policy FILE" if policy is not None else "")
        raise ConfigError(f"{what} the ratio sources was given ({', '.join(chosen) or '-'}); pass one: {options}")


@dataclass(frozen=True)
class AnaConfig:
    """``prunegym ana``: every prunable group × ratio, val top-1 after BatchNorm re-calibration."""

    model: str
    data: str
    out: str
    weights: str | None = None
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    val_size: int | None = None  # None: the data's default val split (carved from the training set)
    bn_recalib_images: int = 500
    criterion: str = "l1"
    round_to: int = 1
    batch_size: int = 500
    calib_batches: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        _check_common(criterion=self.criterion, round_to=self.round_to, bn_recalib_images=self.bn_recalib_images,
                      val_size=self.val_size)  # fmt: skip
        if not self.ratios:
            raise ConfigError("--ratios is empty; pass fractions such as 0.1,0.2,0.3")
        for r in self.ratios:
            _check_fraction("ratios", r)
        if len(set(self.ratios)) != len(self.ratios):
            raise ConfigError(f"--ratios {','.join(map(str, self.ratios))} repeats a value; list each ratio once")


@dataclass(frozen=True)
class PruneConfig:
    """``prunegym prune``: per-group ratios from ``ana`` (``--rate`` or ``--threshold``), ``--uniform --rate`` or
    ``--policy FILE``; writes ``policy.yaml`` and ``model.pt``."""

    model: str
    out: str
    data: str | None = None
    weights: str | None = None
    rate: float | None = None
    threshold: float | None = None
    ana: str | None = None
    uniform: bool = False
    policy: str | None = None
    criterion: str = "l1"
    round_to: int = 1
    mode: str = "dense"
    input_shape: str | None = None
    val_size: int | None = None
    bn_recalib_images: int = 500
    batch_size: int = 500
    calib_batches: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        _check_common(criterion=self.criterion, round_to=self.round_to, bn_recalib_images=self.bn_recalib_images,
                      val_size=self.val_size)  # fmt: skip
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be dense or masked, got {self.mode!r}")
        _check_source(ana=self.ana, uniform=self.uniform, policy=self.policy or "")
        if self.rate is not None:
            _check_fraction("rate", self.rate)
        if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ConfigError(f"--threshold {self.threshold} must be a number ≥ 0 (accuracy points, e.g. 1.0)")
        if self.policy:
            if self.rate is not None or self.threshold is not None:
                raise ConfigError("--policy FILE fixes the ratios; drop --rate/--threshold")
        elif self.uniform:
            if self.rate is None or self.threshold is not None:
                raise ConfigError("--uniform needs --rate R (fraction of MACs to remove), not --threshold")
        elif (self.rate is None) == (self.threshold is None):
            raise ConfigError("--ana needs exactly one of --rate R (MACs to remove) or --threshold T (accuracy points)")


@dataclass(frozen=True)
class TransformConfig:
    """``prunegym transform``: a masked/sparse model → the dense smaller one."""

    model: str
    out: str
    weights: str | None = None
    data: str | None = None
    input_shape: str | None = None
    val_size: int | None = None
    batch_size: int = 500
    atol: float = 1e-5
    seed: int = 0


@dataclass(frozen=True)
class IterateConfig:
    """``prunegym iterate``: the DeePhi loop (prune to a growing rate, finetune, repeat)."""

    model: str
    data: str
    out: str
    rates: tuple[float, ...]
    weights: str | None = None
    ana: str | None = None
    uniform: bool = False
    epochs_per_round: int = 5
    lr: float = 0.01
    batch_size: int = 128
    criterion: str = "l1"
    round_to: int = 1
    val_size: int | None = None
    bn_recalib_images: int = 500
    calib_batches: int = 4
    distill: bool = False  # distill every round from the unpruned model
    kd_alpha: float = 0.9
    kd_temperature: float = 4.0
    seed: int = 0
    max_steps_per_epoch: int | None = None
    eval_test: bool = True

    def __post_init__(self) -> None:
        _check_common(criterion=self.criterion, round_to=self.round_to, bn_recalib_images=self.bn_recalib_images,
                      val_size=self.val_size)  # fmt: skip
        _check_source(ana=self.ana, uniform=self.uniform)
        if not self.rates:
            raise ConfigError("--rates is empty; pass cumulative fractions of MACs to remove, e.g. 0.1,0.2,0.3")
        for r in self.rates:
            _check_fraction("rates", r)
        if any(b <= a for a, b in zip(self.rates, self.rates[1:], strict=False)):
            raise ConfigError(f"--rates {','.join(map(str, self.rates))} must increase: each round removes more")
        if self.epochs_per_round < 1:
            raise ConfigError(f"--epochs-per-round must be ≥ 1, got {self.epochs_per_round}")
        if self.criterion == "lsq":
            raise ConfigError("iterate does not support --criterion lsq (its refit needs the unpruned model); use l1")

    def train_config(self, out: Path, *, teacher: bool) -> TrainConfig:
        return TrainConfig(
            model=self.model, data=self.data, out=str(out), weights=self.weights, epochs=self.epochs_per_round,
            batch_size=self.batch_size, lr=self.lr, warmup_epochs=0.0, teacher="unpruned model" if teacher else None,
            kd_alpha=self.kd_alpha, kd_temperature=self.kd_temperature, val_size=self.val_size, seed=self.seed,
            max_steps_per_epoch=self.max_steps_per_epoch, eval_test=self.eval_test,
        )  # fmt: skip


# ----------------------------------------------------------------------------------------------- tracing


def _user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The deepest traceback frame outside torch, Torch-Pruning and prunegym's engine: the model's own code."""
    here = Path(__file__).resolve().parent
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename)
        if frame.filename.startswith("<") or {"torch", "torch_pruning", "functorch"} & set(path.parts):
            continue
        if path.resolve().parent == here and path.name != "models.py":
            continue
        return frame
    return None


def traced_cost_table(model: nn.Module, *, input_shape: tuple[int, int, int]) -> CostTable:
    """:func:`cost_table` with one-line :class:`UserError` s for models the dependency graph cannot trace.

    The error names the failing op (the line of the model's code, or the module) and the exception.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    except Exception as exc:
        raise UserError(
            f"model cannot run on input {tuple(input_shape)}: {_describe(exc)}; check --input-shape"
        ) from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise UserError(
            f"model returns a {type(out).__name__}, not one tensor of logits; wrap it so forward returns the logits"
        )
    try:
        table = cost_table(model, input_shape=input_shape)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"cannot trace the model's graph for pruning: {_describe(exc)}; replace that op with differentiable "
            "torch code or prune a model without it"
        ) from exc
    if not table.channels:
        raise UserError("the model has no prunable groups (no conv/linear layer whose channels can be removed)")
    return table


def _describe(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    frame = _user_frame(exc)
    where = f" at {Path(frame.filename).name}:{frame.lineno} `{(frame.line or '').strip()}`" if frame else ""
    return f"{type(exc).__name__}{where}: {first}"


# ----------------------------------------------------------------------------------------------- helpers


def calib_batches(
    model: nn.Module, data: DataSplits | None, *, criterion: str, batches: int = 4, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Seeded batches of 64 training images for the data-driven criteria (taylor, lsq); None for the others."""
    if criterion not in NEEDS_CALIB:
        return None
    if data is None:
        raise UserError(f"criterion '{criterion}' needs training images; pass --data SPEC or use --criterion l1")
    mean, std = input_norm(model, mean=data.mean, std=data.std)
    g = torch.Generator().manual_seed(seed + 17)
    return list(iterate_batches(data.train_x, data.train_y, batch_size=64, mean=mean, std=std, shuffle=True,
                                generator=g, limit=64 * batches))  # fmt: skip


def val_accuracy(model: nn.Module, data: DataSplits, *, batch_size: int = 500) -> float:
    """Top-1 (percent) on the val split, which is carved from the training set."""
    mean, std = input_norm(model, mean=data.mean, std=data.std)
    return evaluate(model, data.val_x, data.val_y, mean=mean, std=std, batch_size=batch_size).top1


def recalibrated(model: nn.Module, data: DataSplits, *, images: int, seed: int = 0) -> nn.Module:
    """``model`` with BatchNorm statistics re-estimated on ``images`` training images (in place; 0 = as is)."""
    if images:
        mean, std = input_norm(model, mean=data.mean, std=data.std)
        recalibrate_bn(model, data.train_x, mean=mean, std=std, num_images=images, seed=seed, augment=data.augment)
    return model


def load_masked_model(
    model: str, *, weights: str | None = None, num_classes: int = 10, in_channels: int = 3
) -> nn.Module:
    """A model whose weights may hold ``torch.nn.utils.prune`` reparametrizations (``weight_orig``/``weight_mask``):
    a zoo name/factory with ``weights``, or a saved prunegym model or training checkpoint. Masks are merged."""
    if ("/" in model or model.endswith((".pt", ".pth")) or Path(model).is_dir()) and ":" not in model:
        if weights is not None:
            raise UserError(f"{model} is a saved model; pass it alone as --model, without --weights")
        obj = read_checkpoint(model)
        if obj.get("format") not in (MODEL_FORMAT, CHECKPOINT_FORMAT):
            raise UserError(f"{model} is not a prunegym model; use --model NAME --weights {model}")
        merged = merge_prune_masks(extract_state_dict(obj, source=model))
        return rebuild_model({**obj, "state_dict": merged}, source=model)
    net = load_model(model, num_classes=num_classes, in_channels=in_channels)
    if weights is not None:
        obj = read_checkpoint(weights)
        if obj.get("policy"):
            raise UserError(f"{weights} holds a pruned model; pass it as --model {weights} (no --weights)")
        load_weights(net, merge_prune_masks(extract_state_dict(obj, source=weights)), source=weights)
    return net


# ----------------------------------------------------------------------------------------------- prune


@dataclass(frozen=True, eq=False)
class PruneResult:
    """A pruned (dense) or masked model, what to save with it, and its summary."""

    model: nn.Module
    policy: Policy  # the applied policy (dense: the record stored in model.pt; masked: the planned one)
    record: dict[str, Any] | None  # policy record for save_model (None for masked models: original shapes)
    extra: dict[str, Any]
    summary: Summary


def prune_model(
    *,
    model: nn.Module,
    policy: Policy,
    input_shape: tuple[int, int, int],
    data: DataSplits | None = None,
    mode: str = "dense",
    criterion: str = "l1",
    round_to: int | None = None,
    bn_recalib_images: int = 500,
    batch_size: int = 500,
    calib_batch_count: int = 4,
    seed: int = 0,
) -> PruneResult:
    """Prune ``model`` by ``policy`` (``mode`` dense: channels removed; masked: zeroed in place, shapes kept).

    With ``data`` the pruned model's BatchNorm statistics are re-estimated on ``bn_recalib_images`` training
    images and both models are scored on the val split (the baseline as given). The input is never modified.
    """
    if mode not in MODES:
        raise UserError(f"mode must be dense or masked, got {mode!r}")
    calib = calib_batches(model, data, criterion=criterion, batches=calib_batch_count, seed=seed)
    kwargs = {"input_shape": input_shape, "criterion": criterion, "round_to": round_to, "calib": calib}
    shape = tuple(input_shape)
    if mode == "dense":
        net = apply_policy(model, policy, **kwargs)
        record = dict(net.prunegym_policy)
        applied = Policy.from_dict(record)
        dense_stats = model_stats(net, input_shape=shape)
        extra: dict[str, Any] = {"input_shape": list(shape)}
    else:
        net = mask_policy(model, policy, **kwargs)
        record = None
        mask = {g: list(map(int, idx)) for g, idx in net.prunegym_mask.items()}
        info = model_info(model)
        applied = replace(policy, round_to=policy.round_to if round_to is None else int(round_to), criterion=criterion,
                          input_shape=shape, model=policy.model or (info.name if info else ""))  # fmt: skip
        extra = {"input_shape": list(shape), "mask": mask, "planned_policy": applied.to_dict()}
    base_acc = acc = None
    note = ""
    if data is not None:
        base_acc = val_accuracy(model, data, batch_size=batch_size)
        recalibrated(net, data, images=bn_recalib_images, seed=seed)
        acc = val_accuracy(net, data, batch_size=batch_size)
        note = (f"top-1 on {len(data.val_y)} val images (carved from the training set); compressed after BatchNorm "
                f"re-calibration on {bn_recalib_images} training images, before finetuning")  # fmt: skip
    if mode == "masked":
        dense_stats = model_stats(transform(net, input_shape=shape).model, input_shape=shape)
        note = (note + "; " if note else "") + "weights/operations of the masked model after `prunegym transform`"
    summary = summarize(baseline=model, compressed=dense_stats, input_shape=shape, baseline_accuracy=base_acc,
                        compressed_accuracy=acc, accuracy_note=note)  # fmt: skip
    metrics = {"macs_ratio": summary.compressed_macs / summary.baseline_macs,
               "params_ratio": summary.compressed_params / summary.baseline_params}  # fmt: skip
    applied = applied.with_metrics(**metrics)
    if acc is not None:
        applied = replace(applied, accuracy=acc)
    return PruneResult(model=net, policy=applied, record=record, extra=extra, summary=summary)


def save_pruned(out: Path, result: PruneResult) -> Path:
    """``out/model.pt``, ``out/policy.yaml`` and ``out/summary.json``/``summary.md``, each written atomically."""
    out = Path(out)
    result.policy.save(out / "policy.yaml")
    write_json(out / "summary.json", result.summary.to_dict())
    atomic_write_text(out / "summary.md", result.summary.markdown())
    return save_model(out / "model.pt", model=result.model, policy=result.record, extra=result.extra)


# ----------------------------------------------------------------------------------------------- iterate


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
    skipped: bool = False
    path: str = ""
    model: nn.Module | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (``result.json``), without the model (``asdict`` would deep-copy it)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model", "skipped")}

    def line(self) -> str:
        test = f", {self.test_accuracy:.2f}% test" if self.test_accuracy is not None else ""
        return (f"After round {self.round}: -{100 * self.ops_removed:.1f}% operations, "
                f"-{100 * self.params_removed:.1f}% weights, top-1 {self.accuracy:.2f}% val{test}")  # fmt: skip


def _kept_counts(policy: Policy, channels: Mapping[str, int]) -> dict[str, int]:
    return {g: kept_channels(n, policy.ratio(g), policy.round_to, name=g) for g, n in channels.items()}


def _composed(base: Policy, kept: Mapping[str, int], channels: Mapping[str, int], **meta: Any) -> Policy:
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
    ratios = {g: 1.0 - kept_next[g] / m for g, m in kept_now.items() if kept_next[g] < m}
    return apply_policy(current, Policy(ratios=ratios, round_to=1), input_shape=input_shape, criterion=criterion,
                        calib=calib)  # fmt: skip


def check_finished_rounds(run_dir: Path, rates: Sequence[float]) -> int:
    """How many leading rounds in ``run_dir`` are finished; raise if one was run with another rate."""
    finished = 0
    for k, rate in enumerate(rates, start=1):
        done = Path(run_dir) / f"round_{k}" / "result.json"
        if not done.exists():
            break
        recorded = float(json.loads(done.read_text(encoding="utf-8"))["rate"])
        if abs(recorded - rate) > 1e-9:
            raise UserError(f"{done.parent} was run with rate {recorded}, not {rate}; keep the first rates of --rates "
                            "or use a new --out")  # fmt: skip
        finished = k
    return finished


def iterate_rounds(
    *,
    model: nn.Module,
    data: DataSplits,
    config: IterateConfig,
    policies: Sequence[Policy],
    input_shape: tuple[int, int, int],
    run_dir: Path,
    teacher: nn.Module | None = None,
    progress: Callable[[str, int, int, dict[str, float]], None] | None = None,
    on_round: Callable[[RoundResult], None] | None = None,
) -> list[RoundResult]:
    """Run the rounds of ``config.rates``; ``policies[k]`` holds round k's ratios over ``model``'s groups.

    Round k lives in ``run_dir/round_{k+1}/`` (``policy.yaml``, ``model.pt``, ``finetune/``, ``result.json``
    written last). A round whose ``result.json`` exists is skipped and its model reloaded, so an interrupted run
    resumes at the first unfinished round (and within it, at the finetune's last epoch). See the module docstring
    for how rounds compose.
    """
    if len(policies) != len(config.rates):
        raise ValueError("one policy per rate")
    shape = tuple(input_shape)
    run_dir = Path(run_dir)
    if Policy.from_dict(getattr(model, "prunegym_policy", None) or {"ratios": {}}).cache_key():
        raise UserError("iterate starts from an unpruned model; pass the base model and its weights, not a pruned one")
    channels = dict(traced_cost_table(model, input_shape=shape).channels)
    check_finished_rounds(run_dir, config.rates)
    base_stats = model_stats(model, input_shape=shape)
    info = model_info(model)
    name = info.name if info else config.model
    current, kept_now = model, dict(channels)
    results: list[RoundResult] = []
    for k, (rate, planned) in enumerate(zip(config.rates, policies, strict=True), start=1):
        round_dir = run_dir / f"round_{k}"
        done = round_dir / "result.json"
        if done.exists() and (round_dir / "model.pt").exists():
            record = json.loads(done.read_text(encoding="utf-8"))
            current = load_model(str(round_dir / "model.pt"))
            saved = Policy.from_dict(read_checkpoint(round_dir / "model.pt")["policy"])
            kept_now = _kept_counts(saved, channels)
            fields_ = {f: record[f] for f in RoundResult.__dataclass_fields__ if f in record}
            result = RoundResult(**{**fields_, "skipped": True, "model": current})
            log.info("round %d already done (%s); skipping", k, round_dir)
        else:
            t0 = time.perf_counter()
            kept_next = {g: min(n, kept_now[g]) for g, n in _kept_counts(planned, channels).items()}
            calib = calib_batches(current, data, criterion=config.criterion, batches=config.calib_batches,
                                  seed=config.seed)  # fmt: skip
            pruned = _prune_to(current, kept_now=kept_now, kept_next=kept_next, input_shape=shape,
                               criterion=config.criterion, calib=calib)  # fmt: skip
            composed = _composed(planned, kept_next, channels, source="iterate", model=planned.model or name,
                                 criterion=config.criterion, input_shape=shape)  # fmt: skip
            record = composed.to_dict()
            rebuilt = apply_policy_structure(build_model(name, num_classes=data.num_classes,
                                                         in_channels=data.in_channels), record)  # fmt: skip
            want = {k2: tuple(v.shape) for k2, v in pruned.state_dict().items()}
            if {k2: tuple(v.shape) for k2, v in rebuilt.state_dict().items()} != want:  # pragma: no cover
                raise RuntimeError(f"round {k}: the composed policy does not rebuild the pruned shapes")
            pruned.prunegym_policy = record  # type: ignore[assignment]
            recalibrated(pruned, data, images=config.bn_recalib_images, seed=config.seed)
            acc_pruned = val_accuracy(pruned, data)
            ft_dir = round_dir / "finetune"
            trained = train(config=config.train_config(ft_dir, teacher=teacher is not None), model=pruned, data=data,
                            run_dir=ft_dir, teacher=teacher, policy=record, resume=(ft_dir / "last.pt").exists(),
                            progress=progress)  # fmt: skip
            stats = model_stats(pruned, input_shape=shape)
            result = RoundResult(
                round=k, rate=rate, macs=stats.macs, params=stats.params, ops=stats.ops_deephi,
                macs_removed=1 - stats.macs / base_stats.macs, params_removed=1 - stats.params / base_stats.params,
                ops_removed=1 - stats.ops_deephi / base_stats.ops_deephi, accuracy_pruned=acc_pruned,
                accuracy=trained.best_val.top1, test_accuracy=trained.test.top1 if trained.test else None,
                seconds=time.perf_counter() - t0, path=str(round_dir / "model.pt"), model=pruned,
            )  # fmt: skip
            composed.with_metrics(macs_ratio=stats.macs / base_stats.macs, params_ratio=stats.params /
                                  base_stats.params).save(round_dir / "policy.yaml")  # fmt: skip
            save_model(round_dir / "model.pt", model=pruned, policy=record, extra={"input_shape": list(shape)})
            write_json(done, result.to_dict())
            current, kept_now = pruned, kept_next
            log.info("%s", result.line())
        results.append(result)
        if on_round is not None:
            on_round(result)
    return results
