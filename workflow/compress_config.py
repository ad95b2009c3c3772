"""The options of ``prunegym compress`` (Deep Compression), torch-free so that the CLI builds its flags without it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prunegym.core.errors import ConfigError
from prunegym.core.train_config import check_teacher_precision

__all__ = ["CompressConfig"]


@dataclass(frozen=True)
class CompressConfig:
    """``prunegym compress``: fine-grained magnitude pruning (AGP), weight sharing, Huffman-coded ``.dc`` file.

    Args:
        model: the model to compress (zoo name or saved prunegym model).
        data: data spec (cifar10:DIR, digits, ...).
        out: run folder (one ``pruned_K.pt`` per pruning step, ``model.dc``, ``report.json``, ``report.md``).
        weights: the trained weights.
        sparsity: fraction of the Conv2d/Linear weights set to zero at the end.
        scope: global (one magnitude threshold over all layers), layer (every layer pruned to the sparsity) or
            sigma (Han et al.'s per-layer threshold quality·σ of the layer, the quality solved for the sparsity).
        prune_steps: pruning steps of the AGP schedule (1: one-shot).
        epochs_per_step: finetune epochs after each pruning step, pruned weights held at zero (0: no finetune).
        lr: finetune learning rate of each step (decays to 0 within the step).
        lr_schedule: cosine or poly.
        weight_decay: finetune SGD weight decay.
        distill: distill each pruning step's finetune from the dense model (soft targets at kd_temperature,
            weighted kd_alpha against the labels).
        kd_alpha: weight of the distillation term.
        kd_temperature: distillation temperature.
        teacher_precision: fp32, or bf16: the dense model's forward under bfloat16 autocast (half its time on a
            CPU with AVX-512 BF16 or AMX; opt-in, the soft targets change slightly).
        batch_size: images per SGD step (finetune and centroid finetune).
        bits: cluster-index bits of the Conv2d weights (at most 2^bits shared values per layer).
        linear_bits: cluster-index bits of the Linear weights (empty: the same as --bits).
        index_bits: bits of a relative (CSR/CSC) index; longer runs of zeros cost a filler entry.
        init: centroid initialization: linear, density or random (Forgy).
        centroid_steps: SGD steps of centroid finetuning (0: none).
        centroid_lr: learning rate of the centroids (their gradient sums a cluster's weight gradients).
        val_size: val images carved from the training set (empty: the dataset's default).
        seed: seeds the val split, the data order and the random centroid initialization.
        max_steps_per_epoch: cap on finetune steps per epoch (quick runs).
        eval_limit: evaluate on the first N test images only (empty: all of them; quick runs).
    """

    model: str
    data: str
    out: str
    weights: str | None = None
    sparsity: float = 0.85
    scope: str = "global"
    prune_steps: int = 4
    epochs_per_step: int = 2
    lr: float = 0.01
    lr_schedule: str = "cosine"
    weight_decay: float = 5e-4
    distill: bool = False
    kd_alpha: float = 0.9
    kd_temperature: float = 4.0
    teacher_precision: str = "fp32"  # fp32 | bf16
    batch_size: int = 128
    bits: int = 4
    linear_bits: int | None = None
    index_bits: int = 5
    init: str = "linear"
    centroid_steps: int = 300
    centroid_lr: float = 1e-5
    val_size: int | None = None
    seed: int = 0
    max_steps_per_epoch: int | None = None
    eval_limit: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sparsity) and 0.0 <= self.sparsity < 1.0):
            raise ConfigError(f"--sparsity {self.sparsity} is outside [0, 1); use a fraction such as 0.85")
        if self.scope not in ("global", "layer", "sigma"):
            raise ConfigError(f"--scope must be global, layer or sigma, got {self.scope!r}")
        if self.prune_steps < 1:
            raise ConfigError(f"--prune-steps must be ≥ 1 (1: one-shot), got {self.prune_steps}")
        if self.epochs_per_step < 0:
            raise ConfigError(f"--epochs-per-step must be ≥ 0, got {self.epochs_per_step}")
        for flag, value in (("lr", self.lr), ("centroid-lr", self.centroid_lr)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"--{flag} must be > 0, got {value}")
        if self.lr_schedule not in ("cosine", "poly"):
            raise ConfigError(f"--lr-schedule must be cosine or poly, got {self.lr_schedule!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"--weight-decay must be ≥ 0, got {self.weight_decay}")
        if not (math.isfinite(self.kd_alpha) and 0.0 <= self.kd_alpha <= 1.0):
            raise ConfigError(f"--kd-alpha must be in [0, 1], got {self.kd_alpha}")
        if not (math.isfinite(self.kd_temperature) and self.kd_temperature > 0):
            raise ConfigError(f"--kd-temperature must be > 0, got {self.kd_temperature}")
        check_teacher_precision(self.teacher_precision)
        if self.batch_size < 2:
            raise ConfigError(f"--batch-size must be ≥ 2 (BatchNorm needs it), got {self.batch_size}")
        for flag, value in (("bits", self.bits), ("linear-bits", self.linear_bits)):
            if value is not None and not 1 <= value <= 16:
                raise ConfigError(f"--{flag} must be in 1..16, got {value}")
        if not 1 <= self.index_bits <= 16:
            raise ConfigError(f"--index-bits must be in 1..16, got {self.index_bits}")
        if self.init not in ("linear", "density", "random"):
            raise ConfigError(f"--init must be linear, density or random, got {self.init!r}")
        if self.centroid_steps < 0:
            raise ConfigError(f"--centroid-steps must be ≥ 0, got {self.centroid_steps}")
        for flag, value in (
            ("val-size", self.val_size),
            ("max-steps-per-epoch", self.max_steps_per_epoch),
            ("eval-limit", self.eval_limit),
        ):
            if value is not None and value < 1:
                raise ConfigError(f"--{flag} must be ≥ 1, got {value}")
