"""Options of ``prunegym replay`` (torch-free, so the CLI can list them anywhere)."""

from __future__ import annotations

from dataclasses import dataclass

STEPS = ("prune", "finetune", "transform", "export", "quantize", "verify", "bench", "bundle")


@dataclass(frozen=True)
class ReplayConfig:
    """Options of ``prunegym replay`` (saved as the replay folder's config.yaml)."""

    out: str | None = None  # default: RUN/replay, or runs/replay
    run: str | None = None  # a search run folder: its config.yaml names model/weights/data, best_policy.yaml the policy
    policy: str | None = None
    model: str | None = None
    weights: str | None = None
    data: str | None = None
    criterion: str | None = None  # default: the policy's
    epochs: int = 30
    lr: float = 0.01
    batch_size: int = 128
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    distill: bool = True  # from the unpruned model
    kd_alpha: float = 0.9
    kd_temperature: float = 4.0
    max_steps_per_epoch: int | None = None
    device: str = "auto"  # where the finetune runs: auto (a CUDA GPU when there is one) | cpu | cuda | cuda:N
    val_size: int | None = None
    calib_images: int = 512
    calib_method: str = "minmax"
    per_channel: bool = True
    reduce_range: bool | None = None  # 7-bit weights; None: on x86-64 CPUs without VNNI (U8S8 saturates there)
    test_limit: int | None = None
    bench_threads: tuple[int, ...] = (1, 2)
    bench_batch: int = 64
    bench_repeats: int = 50
    bench_rounds: int = 5
    seed: int = 0
