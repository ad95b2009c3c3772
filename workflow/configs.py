"""The options of the DeePhi workflow commands (``ana``, ``prune``, ``transform``, ``iterate``) as frozen dataclasses.

Each is saved as the run folder's ``config.yaml``; the CLI generates its flags from the fields. Validation errors
name the flag and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from prunegym.core.errors import ConfigError
from prunegym.core.train_config import TrainConfig, check_teacher_precision

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MODES = ("dense", "masked")


def _check_fraction(name: str, value: float, *, closed_low: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` lies in (0, 1) (``closed_low``: [0, 1))."""
    low_ok = value >= 0.0 if closed_low else value > 0.0
    if not (math.isfinite(value) and low_ok and value < 1.0):
        interval = "[0, 1)" if closed_low else "(0, 1)"
        raise ConfigError(f"--{name} {value} is outside {interval}; use a fraction such as 0.5")


def _check_common(*, criterion: str, round_to: int, bn_recalib_images: int, val_size: int | None) -> None:
    """Raise :class:`ConfigError` for the options every command shares."""
    from prunegym.core.pruning import CRITERIA  # lazily: the CLI builds its flags from these configs without torch

    if criterion not in CRITERIA:
        raise ConfigError(f"unknown --criterion '{criterion}'; use one of {', '.join(CRITERIA)}")
    if round_to < 1:
        raise ConfigError(f"--round-to must be ≥ 1, got {round_to}")
    if bn_recalib_images < 0:
        raise ConfigError(f"--bn-recalib-images must be ≥ 0, got {bn_recalib_images}")
    if val_size is not None and val_size < 1:
        raise ConfigError(f"--val-size must be ≥ 1, got {val_size}")


def _check_convention(convention: str) -> None:
    """Raise :class:`ConfigError` for an unknown counting convention."""
    if convention not in ("prunegym", "deephi"):
        raise ConfigError(f"--convention must be prunegym or deephi, got {convention!r}")


def _check_source(*, ana: str | None, uniform: bool, policy: str | None = None) -> None:
    """Raise :class:`ConfigError` unless exactly one ratio source is given (``policy=None``: not offered)."""
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
        _check_common(
            criterion=self.criterion,
            round_to=self.round_to,
            bn_recalib_images=self.bn_recalib_images,
            val_size=self.val_size,
        )
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
    convention: str = "prunegym"

    def __post_init__(self) -> None:
        _check_common(
            criterion=self.criterion,
            round_to=self.round_to,
            bn_recalib_images=self.bn_recalib_images,
            val_size=self.val_size,
        )
        _check_convention(self.convention)
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
    lr_schedule: str = "cosine"
    lr_power: float = 1.0
    weight_decay: float = 5e-4
    nesterov: bool = True
    batch_size: int = 128
    criterion: str = "l1"
    round_to: int = 1
    val_size: int | None = None
    bn_recalib_images: int = 500
    calib_batches: int = 4
    distill: bool = False  # distill every round from the unpruned model
    kd_alpha: float = 0.9
    kd_temperature: float = 4.0
    teacher_precision: str = "fp32"  # fp32 | bf16: the teacher's forward under bfloat16 autocast
    seed: int = 0
    max_steps_per_epoch: int | None = None
    eval_test: bool = True
    convention: str = "prunegym"

    def __post_init__(self) -> None:
        _check_common(
            criterion=self.criterion,
            round_to=self.round_to,
            bn_recalib_images=self.bn_recalib_images,
            val_size=self.val_size,
        )
        _check_source(ana=self.ana, uniform=self.uniform)
        _check_convention(self.convention)
        if not self.rates:
            raise ConfigError("--rates is empty; pass cumulative fractions of MACs to remove, e.g. 0.1,0.2,0.3")
        for r in self.rates:
            _check_fraction("rates", r)
        if any(b <= a for a, b in zip(self.rates, self.rates[1:], strict=False)):
            raise ConfigError(f"--rates {','.join(map(str, self.rates))} must increase: each round removes more")
        if self.epochs_per_round < 1:
            raise ConfigError(f"--epochs-per-round must be ≥ 1, got {self.epochs_per_round}")
        check_teacher_precision(self.teacher_precision)
        if self.criterion == "lsq":
            raise ConfigError("iterate does not support --criterion lsq (its refit needs the unpruned model); use l1")

    def train_config(self, out: Path, *, teacher: bool) -> TrainConfig:
        """The finetune options of one round.

        Args:
            out: the round's finetune folder.
            teacher: distill from the unpruned model.

        Returns:
            A :class:`~prunegym.core.train.TrainConfig` (no warm-up; the LR schedule restarts every round).
        """
        return TrainConfig(
            model=self.model,
            data=self.data,
            out=str(out),
            weights=self.weights,
            epochs=self.epochs_per_round,
            batch_size=self.batch_size,
            lr=self.lr,
            lr_schedule=self.lr_schedule,
            lr_power=self.lr_power,
            weight_decay=self.weight_decay,
            nesterov=self.nesterov,
            warmup_epochs=0.0,
            teacher="unpruned model" if teacher else None,
            kd_alpha=self.kd_alpha,
            kd_temperature=self.kd_temperature,
            teacher_precision=self.teacher_precision,
            val_size=self.val_size,
            seed=self.seed,
            max_steps_per_epoch=self.max_steps_per_epoch,
            eval_test=self.eval_test,
        )
