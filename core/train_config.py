"""The options of ``prunegym train`` / ``finetune`` (torch-free, so that the CLI builds its flags without PyTorch)."""

from __future__ import annotations

from dataclasses import dataclass

from prunegym.core.device import DEVICE_HELP
from prunegym.core.errors import ConfigError, UserError

__all__ = ["SCHEDULE_KEYS", "TEACHER_PRECISIONS", "TrainConfig", "check_teacher_precision", "teacher_precision_stamp"]

TEACHER_PRECISIONS = ("fp32", "bf16")


def check_teacher_precision(value: str) -> None:
    """Refuse a ``--teacher-precision`` other than fp32 or bf16 (every command that distils shares it)."""
    if value not in TEACHER_PRECISIONS:
        raise ConfigError(f"--teacher-precision must be fp32 or bf16, got {value!r}")


def teacher_precision_stamp(value: str) -> dict[str, str]:
    """What a step's stamp records of ``--teacher-precision``: nothing at the default fp32, so that the run folders
    made before the option existed stay fresh; the value otherwise."""
    return {} if value == "fp32" else {"teacher_precision": value}


# what a resumed run must share with the run it continues (the LR schedule and the data it sees)
SCHEDULE_KEYS = (
    "epochs",
    "lr",
    "batch_size",
    "weight_decay",
    "warmup_epochs",
    "min_lr",
    "momentum",
    "lr_schedule",
    "lr_power",
    "label_smoothing",
    "augment",
    "val_size",
    "kd_alpha",
    "kd_temperature",
    "teacher_precision",
    "seed",
    "max_steps_per_epoch",
    "data",
)


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``prunegym train`` / ``prunegym finetune`` (every field is a CLI flag and a config key).

    Args:
        model: the model to train (zoo name, factory, or a saved prunegym model).
        data: data spec (cifar10:DIR, digits, ...).
        out: run folder (config.yaml, last.pt, best.pt, tb/, metrics.jsonl).
        weights: initial weights (state_dict or checkpoint).
        epochs: training epochs.
        batch_size: images per SGD step.
        lr: peak learning rate of the schedule (Caffe's base_lr).
        min_lr: learning rate at the end of the schedule.
        lr_schedule: cosine (decay to min_lr on a half cosine) or poly (Caffe's "poly" policy:
            lr · (1 − step/total)^lr_power, the DeePhi tutorial's solver).
        lr_power: exponent of the poly schedule.
        momentum: SGD momentum.
        nesterov: Nesterov momentum.
        weight_decay: SGD weight decay.
        warmup_epochs: linear learning-rate warm-up, in epochs (fractions allowed).
        label_smoothing: label smoothing of the cross-entropy term.
        augment: none, crop or crop+flip (empty: the dataset's default).
        teacher: model to distill from (zoo name or saved prunegym model; empty: no distillation).
        teacher_weights: the teacher's weights.
        kd_alpha: weight of the distillation term (1 - kd_alpha weighs the labels).
        kd_temperature: distillation temperature.
        teacher_precision: fp32, or bf16: the teacher's forward under bfloat16 autocast (its logits back in FP32
            for the loss). Half the teacher's time on a CPU with AVX-512 BF16 or AMX, where the teacher is about half
            of a distillation step; slower where the CPU has neither. Opt-in: the soft targets change slightly.
        val_size: val images carved from the training set (empty: the dataset's default; 0: train on all of them
            and keep the last epoch).
        acc_name: top1 or top5: the accuracy that selects the best checkpoint.
        seed: seeds the val split, the data order and the initialization.
        max_steps_per_epoch: cap on steps per epoch (quick runs).
        eval_test: evaluate the best checkpoint on the test split at the end.
        device: where to train: auto (a CUDA GPU when there is one), cpu, cuda or cuda:N.
        channels_last: train in the channels-last memory format (faster convolutions on CPUs and GPUs; the
            weights saved are the same tensors).
        compile: compile the training forward with torch.compile (a one-time compile of a minute or two, then
            faster steps; opt-in).
    """

    model: str
    data: str
    out: str
    weights: str | None = None
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    min_lr: float = 0.0
    lr_schedule: str = "cosine"  # cosine | poly
    lr_power: float = 1.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    augment: str | None = None  # none | crop | crop+flip; None = the dataset's default
    teacher: str | None = None  # a model spec or a saved prunegym model to distill from
    teacher_weights: str | None = None
    kd_alpha: float = 0.9  # weight of the distillation term
    kd_temperature: float = 4.0
    teacher_precision: str = "fp32"  # fp32 | bf16
    val_size: int | None = None
    acc_name: str = "top1"  # top1 | top5: which accuracy picks the best checkpoint
    seed: int = 0
    max_steps_per_epoch: int | None = None  # cap for quick runs and tests
    eval_test: bool = True  # evaluate the best checkpoint on the test split at the end
    device: str = "auto"  # auto (a CUDA GPU when there is one) | cpu | cuda | cuda:N
    channels_last: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UserError(f"epochs must be ≥ 1, got {self.epochs}")
        if self.batch_size < 2:
            raise UserError(f"batch_size must be ≥ 2 (BatchNorm needs it), got {self.batch_size}")
        if self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if self.lr_schedule not in {"cosine", "poly"}:
            raise UserError(f"lr_schedule must be cosine or poly, got {self.lr_schedule!r}")
        if not self.lr_power > 0:
            raise UserError(f"lr_power must be > 0, got {self.lr_power}")
        if self.acc_name not in {"top1", "top5"}:
            raise UserError(f"acc_name must be top1 or top5, got {self.acc_name!r}")
        if self.augment not in {None, "none", "crop", "crop+flip"}:
            raise UserError(f"augment must be none, crop or crop+flip, got {self.augment!r}")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise UserError(f"kd_alpha must be in [0, 1], got {self.kd_alpha}")
        check_teacher_precision(self.teacher_precision)
        if self.device != "auto" and self.device.split(":")[0] not in {"cpu", "cuda"}:
            raise UserError(f"device must be {DEVICE_HELP}, got {self.device!r}")
