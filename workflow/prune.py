"""``prunegym prune`` as a library call: prune a model by a policy (dense or masked) and save what it made."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from prunegym.core.checkpoint import save_model
from prunegym.core.data import DataSplits
from prunegym.core.errors import UserError
from prunegym.core.io import atomic_write_text, write_json
from prunegym.core.models import model_info
from prunegym.core.policy import Policy
from prunegym.core.pruning import apply_policy, mask_policy, transform
from prunegym.core.run_folder import MODEL_FILE
from prunegym.core.stats import ModelStats, model_stats
from prunegym.workflow.configs import MODES
from prunegym.workflow.evaluation import calib_batches, recalibrated, val_accuracy
from prunegym.workflow.summary import Summary, summarize


@dataclass(frozen=True, eq=False)
class PruneResult:
    """A pruned (dense) or masked model, what to save with it, and its summary."""

    model: nn.Module
    policy: Policy  # the applied policy (dense: the record stored in model.pt; masked: the planned one)
    record: dict[str, Any] | None  # policy record for save_model (None for masked models: original shapes)
    extra: dict[str, Any]
    summary: Summary


def _dense(
    model: nn.Module, policy: Policy, *, shape: tuple[int, ...], kwargs: dict[str, Any]
) -> tuple[nn.Module, Policy, dict[str, Any], dict[str, Any], ModelStats]:
    """``(net, applied policy, record, extra, stats)`` of the physically pruned model."""
    net = apply_policy(model, policy, **kwargs)
    record = dict(net.prunegym_policy)
    extra: dict[str, Any] = {"input_shape": list(shape)}
    return net, Policy.from_dict(record), record, extra, model_stats(net, input_shape=shape)


def _masked(
    model: nn.Module,
    policy: Policy,
    *,
    shape: tuple[int, ...],
    criterion: str,
    round_to: int | None,
    kwargs: dict[str, Any],
) -> tuple[nn.Module, Policy, dict[str, Any]]:
    """``(net, planned policy, extra)`` of the masked model (channels zeroed, shapes kept)."""
    net = mask_policy(model, policy, **kwargs)
    mask = {g: list(map(int, idx)) for g, idx in net.prunegym_mask.items()}
    info = model_info(model)
    applied = replace(
        policy,
        round_to=policy.round_to if round_to is None else int(round_to),
        criterion=criterion,
        input_shape=shape,
        model=policy.model or (info.name if info else ""),
    )
    extra = {"input_shape": list(shape), "mask": mask, "planned_policy": applied.to_dict()}
    return net, applied, extra


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
    convention: str = "prunegym",
) -> PruneResult:
    """Prune ``model`` by ``policy``; the input is never modified.

    With ``data`` the pruned model's BatchNorm statistics are re-estimated on ``bn_recalib_images`` training
    images and both models are scored on the val split (the baseline as given).

    Args:
        model: the unpruned model.
        policy: the per-group ratios.
        input_shape: ``(C, H, W)`` of one input.
        data: the dataset (None: no accuracies; only l1-like criteria).
        mode: ``dense`` (channels removed) or ``masked`` (zeroed in place, shapes kept).
        criterion: the channel-selection criterion.
        round_to: round kept channel counts to this multiple (default: the policy's).
        bn_recalib_images: training images for BatchNorm re-calibration (0: off).
        batch_size: images per evaluation batch.
        calib_batch_count: batches of 64 training images for taylor/lsq.
        seed: seeds calibration batches and BN re-calibration.
        convention: how the summary counts weights and operations (``prunegym`` or ``deephi``).

    Returns:
        A :class:`PruneResult`; the summary of a masked model counts its ``transform``-ed dense form.

    Raises:
        UserError: an unknown mode, or a data-driven criterion without ``data``.
    """
    if mode not in MODES:
        raise UserError(f"mode must be dense or masked, got {mode!r}")
    calib = calib_batches(model, data, criterion=criterion, batches=calib_batch_count, seed=seed)
    kwargs = {"input_shape": input_shape, "criterion": criterion, "round_to": round_to, "calib": calib}
    shape = tuple(input_shape)
    if mode == "dense":
        net, applied, record, extra, dense_stats = _dense(model, policy, shape=shape, kwargs=kwargs)
    else:
        net, applied, extra = _masked(model, policy, shape=shape, criterion=criterion, round_to=round_to, kwargs=kwargs)
        record = None
    base_acc = acc = None
    note = ""
    if data is not None:
        base_acc = val_accuracy(model, data, batch_size=batch_size)
        recalibrated(net, data, images=bn_recalib_images, seed=seed)
        acc = val_accuracy(net, data, batch_size=batch_size)
        note = (
            f"top-1 on {len(data.val_y)} val images (carved from the training set); compressed after BatchNorm "
            f"re-calibration on {bn_recalib_images} training images, before finetuning"
        )
    if mode == "masked":
        dense_stats = model_stats(transform(net, input_shape=shape).model, input_shape=shape)
        note = (note + "; " if note else "") + "weights/operations of the masked model after `prunegym transform`"
    summary = summarize(
        baseline=model,
        compressed=dense_stats,
        input_shape=shape,
        baseline_accuracy=base_acc,
        compressed_accuracy=acc,
        accuracy_note=note,
        convention=convention,
    )
    metrics = {
        "macs_ratio": summary.compressed_macs / summary.baseline_macs,
        "params_ratio": dense_stats.params / model_stats(model, input_shape=shape).params,  # every parameter
    }
    applied = applied.with_metrics(**metrics)
    if acc is not None:
        applied = replace(applied, accuracy=acc)
    return PruneResult(model=net, policy=applied, record=record, extra=extra, summary=summary)


def save_pruned(out: Path, result: PruneResult) -> Path:
    """Write ``out/model.pt``, ``out/policy.yaml`` and ``out/summary.json``/``summary.md``, each atomically.

    Args:
        out: the run folder.
        result: what :func:`prune_model` returned.

    Returns:
        The path of ``model.pt``.
    """
    out = Path(out)
    result.policy.save(out / "policy.yaml")
    write_json(out / "summary.json", result.summary.to_dict())
    atomic_write_text(out / "summary.md", result.summary.markdown())
    return save_model(out / MODEL_FILE, model=result.model, policy=result.record, extra=result.extra)
