"""Training and finetuning: SGD + momentum, cosine LR with linear warm-up, label smoothing, knowledge
distillation, TensorBoard scalars, a checkpoint every epoch carrying the resolved config, and exact resume.

The loop reads top to bottom (nanoGPT-style): pure helpers (:func:`get_lr`, :func:`distillation_loss`), then
:func:`train`. Shuffling and augmentation are seeded per epoch, so a resumed run replays the same batches.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunegym.core.checkpoint import CHECKPOINT_FORMAT, read_checkpoint
from prunegym.core.config import config_to_dict
from prunegym.core.data import DataSplits, iterate_batches, normalize, num_batches
from prunegym.core.device import resolve_device
from prunegym.core.errors import CheckpointError, UserError
from prunegym.core.evaluate import EvalResult, evaluate, input_norm
from prunegym.core.io import append_jsonl, atomic_torch_save, atomic_write_text
from prunegym.core.models import model_info
from prunegym.core.onnxrt.machine import cpu_flags
from prunegym.core.run_folder import BEST_CHECKPOINT, LAST_CHECKPOINT, METRICS_FILE
from prunegym.core.train_config import SCHEDULE_KEYS, TrainConfig

log = logging.getLogger(__name__)

LAST = LAST_CHECKPOINT
BEST = BEST_CHECKPOINT


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_epoch: int
    best_val: EvalResult | None  # None when the data has no val split (val_size 0): the last epoch is kept
    test: EvalResult | None
    seconds: float


def get_lr(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int,
    base_lr: float,
    min_lr: float = 0.0,
    schedule: str = "cosine",
    power: float = 1.0,
) -> float:
    """Linear warm-up for ``warmup_steps``, then a decay from ``base_lr`` to ``min_lr`` at ``total_steps``: a half
    cosine, or Caffe's ``poly`` policy ``(1 − progress)^power``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "poly":
        return min_lr + (base_lr - min_lr) * (1.0 - progress) ** power
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hinton et al. 2015: ``alpha·T²·KL(teacher_T ‖ student_T) + (1 − alpha)·CE(student, labels)``."""
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return alpha * t * t * soft + (1.0 - alpha) * hard


def teacher_logits(teacher: nn.Module, x: torch.Tensor, *, precision: str = "fp32") -> torch.Tensor:
    """The teacher's logits for ``x``, without autograd and in FP32; ``precision="bf16"`` runs the forward under
    bfloat16 autocast on ``x``'s device (the soft targets then carry bfloat16's ~3 significant digits)."""
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        return teacher(x).float()


def sync_metrics(run_dir: Path, checkpoint: dict[str, Any]) -> list[dict[str, Any]]:
    """Rewrite ``run_dir/metrics.jsonl`` from the history a checkpoint carries, so that the file holds exactly the
    checkpoint's epochs (a kill between the checkpoint and its metrics line loses nothing); returns the history."""
    history = list(checkpoint.get("history") or [])
    if "history" in checkpoint:
        atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(h) + "\n" for h in history))
    return history


def _checkpoint_payload(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    step: int,
    best: dict[str, Any],
    config: TrainConfig,
    policy: dict[str, Any] | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    info = model_info(model)
    return {
        **(extra or {}),
        "format": CHECKPOINT_FORMAT,
        "model": info.name if info else config.model,
        "num_classes": info.num_classes if info else None,
        "in_channels": info.in_channels if info else None,
        "policy": policy,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "best": best,
        "config": config_to_dict(config),
    }


def train(
    *,
    config: TrainConfig,
    model: nn.Module,
    data: DataSplits,
    run_dir: Path,
    teacher: nn.Module | None = None,
    policy: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    after_step: Callable[[], None] | None = None,
    resume: bool = False,
    progress: Callable[[str, int, int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data.train``; select the best epoch on ``data.val``; checkpoint every epoch.

    With no val images (``val_size`` 0: every training image is trained on) nothing is selected: ``best.pt`` is
    the last epoch and ``best_val`` is ``None``.

    Runs on ``config.device`` (batches are prepared on the CPU and moved there); ``model`` and ``teacher`` are
    returned to the CPU at the end, and checkpoints always hold CPU tensors.

    ``progress(phase, done, total, metrics)`` is called after every step (the CLI draws a bar with it).
    ``policy`` (for pruned models) is stored in every checkpoint so they rebuild without pickled modules;
    ``extra`` (e.g. a masked model's ``mask`` and ``input_shape``) too. ``after_step()`` runs after every
    optimizer step (e.g. :func:`prunegym.core.pruning.mask_keeper` keeps masked channels at zero).
    """
    from torch.utils.tensorboard import SummaryWriter  # slow import; only when training

    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    device = resolve_device(config.device)
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    if teacher is not None:
        teacher.to(device, memory_format=fmt)
    forward = torch.compile(model) if config.compile else model  # shares the parameters: checkpoints see both
    bf16_teacher = teacher is not None and config.teacher_precision == "bf16"
    log.info(
        "training on %s (%s%s%s)",
        device,
        "channels-last" if config.channels_last else "contiguous",
        ", compiled" if config.compile else "",
        ", teacher in bf16" if bf16_teacher else "",
    )
    if bf16_teacher and device.type == "cpu" and not {"avx512_bf16", "amx_bf16"} & set(cpu_flags()):
        log.warning("teacher_precision bf16 on a CPU without AVX-512 BF16 or AMX: emulated there, slower than fp32")
    mean, std = input_norm(model, mean=data.mean, std=data.std)
    augment = config.augment or data.augment
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
    )
    steps_per_epoch = num_batches(len(data.train_x), config.batch_size, drop_last=True)
    if config.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise UserError(f"training split has {len(data.train_x)} images, fewer than one batch of {config.batch_size}")
    total_steps = steps_per_epoch * config.epochs
    has_val = len(data.val_x) > 0
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)

    start_epoch, step = 0, 0
    best: dict[str, Any] = {"epoch": -1, "metric": -1.0, "val": None}
    history: list[dict[str, Any]] = []
    last_path = run_dir / LAST
    if resume and last_path.exists():
        ckpt = read_checkpoint(last_path)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{last_path} is not a prunegym training checkpoint; remove it or pick another --out")
        saved = ckpt.get("config") or {}
        now = config_to_dict(config)
        changed = [k for k in SCHEDULE_KEYS if k in saved and saved[k] != now.get(k)]
        if changed:
            was = ", ".join(f"{k} {saved[k]!r} → {now.get(k)!r}" for k in changed)
            raise CheckpointError(
                f"{run_dir} was trained with another schedule ({was}); resume with the same settings, "
                "or train into a new --out"
            )
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, step, best = int(ckpt["epoch"]) + 1, int(ckpt["step"]), dict(ckpt["best"])
        history = sync_metrics(run_dir, ckpt)
        if history:  # "seconds" counts the training time of every session, not only this one's
            t0 -= float(history[-1].get("seconds") or 0.0)
        log.info("resuming %s at epoch %d (step %d)", run_dir, start_epoch, step)
    if start_epoch >= config.epochs:
        log.info("%s already finished %d epochs", run_dir, config.epochs)

    writer = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=step if resume else None)
    if teacher is not None:
        teacher.eval()
    t_mean, t_std = input_norm(teacher, mean=data.mean, std=data.std) if teacher is not None else (mean, std)
    try:
        for epoch in range(start_epoch, config.epochs):
            model.train()
            gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            running, seen = 0.0, 0
            batches = iterate_batches(
                data.train_x,
                data.train_y,
                batch_size=config.batch_size,
                mean=(0.0,) * data.in_channels,
                std=(1.0,) * data.in_channels,
                shuffle=True,
                augment=augment,
                generator=gen,
                drop_last=True,
            )
            for i, (xb01, yb) in enumerate(batches):
                if i >= steps_per_epoch:
                    break
                # iterate_batches gave x/255 (mean 0, std 1): normalize per network so teacher and student may differ
                xb01, yb = xb01.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                xb01 = xb01.contiguous(memory_format=fmt)
                xb = normalize(xb01, mean=mean, std=std)
                lr = get_lr(
                    step,
                    total_steps=total_steps,
                    warmup_steps=warmup_steps,
                    base_lr=config.lr,
                    min_lr=config.min_lr,
                    schedule=config.lr_schedule,
                    power=config.lr_power,
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                logits = forward(xb)
                if teacher is not None:
                    t_in = normalize(xb01, mean=t_mean, std=t_std)
                    t_logits = teacher_logits(teacher, t_in, precision=config.teacher_precision)
                    loss = distillation_loss(
                        logits,
                        t_logits,
                        yb,
                        alpha=config.kd_alpha,
                        temperature=config.kd_temperature,
                        label_smoothing=config.label_smoothing,
                    )
                else:
                    loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise UserError(f"loss became {loss_value} at epoch {epoch} step {i}; lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if after_step is not None:
                    after_step()
                step += 1
                running += loss_value * len(yb)
                seen += len(yb)
                if step % 20 == 0:
                    writer.add_scalar("train/loss", loss_value, step)
                    writer.add_scalar("train/lr", lr, step)
                if progress is not None:
                    progress(
                        f"epoch {epoch + 1}/{config.epochs}",
                        i + 1,
                        steps_per_epoch,
                        {"loss": running / seen, "lr": lr},
                    )
            writer.add_scalar("train/epoch_loss", running / max(seen, 1), step)
            if has_val:
                val = evaluate(model, data.val_x, data.val_y, mean=mean, std=std)
                metric = val.top1 if config.acc_name == "top1" else val.top5
                writer.add_scalar("val/top1", val.top1, step)
                writer.add_scalar("val/top5", val.top5, step)
                writer.add_scalar("val/loss", val.loss, step)
                is_best = metric > best["metric"]
            else:  # nothing held out to choose with: each epoch supersedes the one before (best.pt is the last)
                val, metric, is_best = None, None, True
            writer.flush()
            if is_best:
                best = {"epoch": epoch, "metric": metric, "val": val.to_dict() if val else None}
            record = {
                "epoch": epoch,
                "step": step,
                "train_loss": running / max(seen, 1),
                **({f"val_{k}": v for k, v in val.to_dict().items()} if val else {}),
                "seconds": round(time.perf_counter() - t0, 2),
            }
            history.append(record)
            payload = _checkpoint_payload(
                model=model,
                optimizer=optimizer,
                epoch=epoch,
                step=step,
                best=best,
                config=config,
                policy=policy,
                extra={**(extra or {}), "history": history, "input_shape": list(data.input_shape)},
            )
            if is_best:
                atomic_torch_save(run_dir / BEST, payload)
            atomic_torch_save(last_path, payload)  # last, so a crash between the two never loses the best
            append_jsonl(run_dir / METRICS_FILE, record)  # after the checkpoint; a resume rewrites it from history
            if val is None:
                log.info(
                    "epoch %d: train loss %.4f (no val split: the last epoch is kept)",
                    epoch + 1,
                    running / max(seen, 1),
                )
            else:
                log.info(
                    "epoch %d: train loss %.4f, val top1 %.2f%% (best %.2f%% at epoch %d)",
                    epoch + 1,
                    running / max(seen, 1),
                    val.top1,
                    best["val"]["top1"],
                    best["epoch"] + 1,
                )
    finally:
        writer.close()
        model.to("cpu", memory_format=torch.contiguous_format)  # as a reloaded model is: results match exactly
        if teacher is not None:
            teacher.to("cpu", memory_format=torch.contiguous_format)

    best_ckpt = read_checkpoint(run_dir / BEST)
    model.load_state_dict(best_ckpt["state_dict"])
    test = None
    if config.eval_test:
        test = evaluate(model, data.test_x, data.test_y, mean=mean, std=std)
        log.info("best epoch %d: test top1 %.2f%% top5 %.2f%%", best["epoch"] + 1, test.top1, test.top5)
    bv = best["val"]
    return TrainResult(
        run_dir=run_dir,
        epochs_done=config.epochs,
        best_epoch=int(best["epoch"]),
        best_val=EvalResult(top1=bv["top1"], top5=bv["top5"], n=bv["n"], loss=bv["loss"]) if bv else None,
        test=test,
        seconds=time.perf_counter() - t0,
    )
