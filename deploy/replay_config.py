"""Options of ``prunegym replay`` (torch-free, so the CLI can list them anywhere)."""

from __future__ import annotations

from dataclasses import dataclass

from prunegym.core.onnxrt.runtime import check_runtime
from prunegym.core.train_config import check_teacher_precision

STEPS = ("prune", "finetune", "transform", "export", "quantize", "verify", "bench", "bundle")


@dataclass(frozen=True)
class ReplayConfig:
    """Options of ``prunegym replay`` (saved as the replay folder's config.yaml).

    Args:
        out: replay folder (default: RUN/replay, or runs/replay).
        run: search run folder: its config.yaml names model, weights and data, its best_policy.yaml the policy.
        policy: policy YAML (instead of, or overriding, the run's best).
        model: the unpruned model (default: the run's).
        weights: its weights (default: the run's).
        data: data spec (default: the run's).
        criterion: channel-selection criterion (default: the policy's).
        epochs: finetune epochs.
        lr: peak learning rate of the cosine schedule.
        batch_size: finetune batch size.
        weight_decay: SGD weight decay.
        warmup_epochs: linear warm-up epochs.
        label_smoothing: label smoothing of the cross-entropy term.
        distill: distill from the unpruned model while finetuning.
        kd_alpha: weight of the distillation term.
        kd_temperature: distillation temperature.
        teacher_precision: fp32, or bf16: the teacher's forward under bfloat16 autocast (half its time on a CPU
            with AVX-512 BF16 or AMX; opt-in, the soft targets change slightly).
        max_steps_per_epoch: cap on steps per epoch (empty: the whole training set).
        device: where the finetune runs.
        channels_last: finetune in the channels-last memory format (faster convolutions).
        compile: compile the finetune's forward with torch.compile (one-time compile, then faster steps).
        val_size: val images carved from the training set (empty: the dataset's default; 0: train on all of them
            and keep the last epoch).
        calib_images: training images to calibrate INT8.
        calib_method: minmax, entropy, percentile.
        per_channel: per-channel INT8 weights.
        reduce_range: 7-bit INT8 weights (empty: on x86-64 CPUs without VNNI, where U8S8 kernels saturate).
        test_limit: verify on only the first N test images.
        runtime: the runtime that will ship, on which the ONNX models are verified and benchmarked: ort (ONNX Runtime)
            or openvino (pip install 'prunegym[openvino]').
        bench_threads: thread counts to benchmark.
        bench_batch: batch size of the throughput runs.
        bench_repeats: timed runs per model and thread count.
        bench_rounds: interleaved rounds of the benchmark.
        seed: seeds the finetune and the calibration images.
    """

    out: str | None = None
    run: str | None = None
    policy: str | None = None
    model: str | None = None
    weights: str | None = None
    data: str | None = None
    criterion: str | None = None
    epochs: int = 30
    lr: float = 0.01
    batch_size: int = 128
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    distill: bool = True
    kd_alpha: float = 0.9
    kd_temperature: float = 4.0
    teacher_precision: str = "fp32"  # fp32 | bf16
    max_steps_per_epoch: int | None = None
    device: str = "auto"
    channels_last: bool = True
    compile: bool = False
    val_size: int | None = None
    calib_images: int = 512
    calib_method: str = "minmax"
    per_channel: bool = True
    reduce_range: bool | None = None
    test_limit: int | None = None
    runtime: str = "ort"
    bench_threads: tuple[int, ...] = (1, 2)
    bench_batch: int = 64
    bench_repeats: int = 50
    bench_rounds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        check_runtime(self.runtime)
        check_teacher_precision(self.teacher_precision)
