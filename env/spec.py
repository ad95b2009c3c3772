"""The options that define a search problem (torch-free, so that the CLI builds its flags without PyTorch).

:class:`EnvSpec` nests :class:`EvaluatorConfig` (how a candidate is scored), :class:`EnvConfig` (what an episode
optimizes) and :class:`LatencySpec` (how the device's latency enters); :func:`~prunegym.env.factory.build_env`
turns one into the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prunegym.core.config import config_options, resolve_config
from prunegym.core.errors import UserError
from prunegym.core.onnxrt import LatencyConfig, check_runtime
from prunegym.env.rewards import get_reward

__all__ = ["EnvConfig", "EnvSpec", "EvaluatorConfig", "LatencySpec"]


@dataclass(frozen=True)
class EvaluatorConfig:
    """How a candidate policy is scored.

    Args:
        val_size: images of the val split (carved from the training set) to score on; AMC used 5,000 on CIFAR.
        bn_recalib_images: training images used to re-estimate BatchNorm statistics after pruning (0 = off).
        bn_recalib_augment: augmentation of those images: None = the dataset's training augmentation (matches
            the statistics training produced), or "none" / "crop" / "crop+flip".
        finetune_steps: SGD steps of short finetuning before scoring (0 = none, AMC's setting).
        finetune_lr: learning rate of that finetune (momentum 0.9, weight decay 5e-4, constant).
        finetune_batch_size: batch size of that finetune.
        report_every: with a ``report`` callback, score every this many finetune steps (for early stopping).
        batch_size: evaluation batch size.
        criterion: channel-selection criterion of the pruner (l1, l2, taylor, bn_scale, fpgm, lsq).
        round_to: channel counts rounded to this multiple (empty: the latency table's; with measured latency the
            device's NCHWc block, 8 with AVX2 and 16 with AVX-512; else 1).
        residual_stream: search the residual channels of padded-shortcut ResNets too (one group per stage);
            --no-residual-stream gives the inner-block groups only, as searches before it did.
        calib_batches: batches of 64 training images given to data-driven criteria (taylor, lsq).
        seed: seeds the BN re-calibration subset, the finetune batches and the finetune itself.
        cache_size: how many evaluated candidates to remember.
    """

    val_size: int = 5000
    bn_recalib_images: int = 500
    bn_recalib_augment: str | None = None
    finetune_steps: int = 0
    finetune_lr: float = 0.01
    finetune_batch_size: int = 64
    report_every: int = 10
    batch_size: int = 500
    criterion: str = "l1"
    round_to: int | None = None
    residual_stream: bool = True
    calib_batches: int = 4
    seed: int = 0
    cache_size: int = 4096

    def __post_init__(self) -> None:
        if self.val_size < 1:
            raise UserError(f"val_size must be ≥ 1, got {self.val_size}")
        if self.finetune_steps < 0 or self.bn_recalib_images < 0:
            raise UserError("finetune_steps and bn_recalib_images must be ≥ 0")


@dataclass(frozen=True)
class EnvConfig:
    """What the episode optimizes.

    Args:
        target: the constrained resource, "macs", "params" or "latency".
        target_ratio: the fraction of the unpruned model's resource to keep (0.5 = half the MACs).
        reward: acc (val accuracy; the budget is a hard wall, AMC's resource-constrained mode), acc_flops
            (-error × log MACs, AMC's accuracy-guaranteed mode), latency_soft (accuracy × (latency/target)^w,
            MnasNet's soft constraint, w = --latency-weight), latency_hard (accuracy, divided by latency/target
            when over it).
        min_ratio: smallest ratio an action maps to.
        max_ratio: largest ratio an action maps to (and the ratio the action wall assumes for later groups).
        action_wall: clip each action so the target stays reachable (AMC's resource-constrained mode).
        latency_weight: the exponent w of the soft latency reward (MnasNet: −0.07).
        depth: the group inside a removable residual block (one with an identity shortcut) may also remove the
            whole block: the top remove_band of its action range means "remove".
        remove_band: the fraction of a block group's action range, at its top end, that removes the block.
    """

    target: str = "macs"
    target_ratio: float = 0.5
    reward: str = "acc"
    min_ratio: float = 0.0
    max_ratio: float = 0.8
    action_wall: bool = True
    latency_weight: float = -0.07
    depth: bool = True
    remove_band: float = 0.2

    def __post_init__(self) -> None:
        if self.target not in {"macs", "params", "latency"}:
            raise UserError(f"target must be macs, params or latency, got {self.target!r}")
        if not 0.0 <= self.min_ratio <= self.max_ratio < 1.0:
            raise UserError(
                f"need 0 ≤ min_ratio ≤ max_ratio < 1, got min_ratio={self.min_ratio}, max_ratio={self.max_ratio}"
            )
        if not 0.0 < self.target_ratio <= 1.0:
            raise UserError(f"target_ratio must be in (0, 1], got {self.target_ratio}")
        if not 0.0 < self.remove_band < 1.0:
            raise UserError(f"remove_band must be in (0, 1), got {self.remove_band}")
        get_reward(self.reward)


@dataclass(frozen=True)
class LatencySpec:
    """How the device's latency enters the search.

    Args:
        latency: none, measured (every candidate, here), predicted (a table from `prunegym latency build`) or
            remote (every candidate, on the device a `prunegym device serve` worker measures on: --device, --redis).
        latency_table: the table for predicted latency.
        provider: ONNX Runtime execution provider (cpu, cuda, openvino, tensorrt).
        runtime: the runtime that times the models: ort (ONNX Runtime) or openvino (pip install 'prunegym[openvino]');
            with remote latency, the device's (checked against its worker).
        threads: intra-op threads of the latency session (remote: the worker's --threads).
        latency_batch: batch size of a timed run.
        latency_repeats: timed runs per measurement (a fifth of them, at least 3, warm up first).
        device: the remote device's name (remote latency; `prunegym device list` shows them).
        redis: the Redis URL the remote device's worker listens on (remote latency), redis://[:PASSWORD@]HOST:PORT/DB.
        remote_timeout: seconds to wait for the remote device to register and for each of its results.
    """

    latency: str = "none"
    latency_table: str | None = None
    provider: str = "cpu"
    runtime: str = "ort"
    threads: int = 1
    latency_batch: int = 1
    latency_repeats: int = 30
    device: str | None = None
    redis: str | None = None
    remote_timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.latency not in {"none", "measured", "predicted", "remote"}:
            raise UserError(f"latency must be none, measured, predicted or remote, got {self.latency!r}")
        if self.latency == "predicted" and not self.latency_table:
            raise UserError("latency predicted needs --latency-table FILE (make one with `prunegym latency build`)")
        if self.latency == "remote" and not (self.device and self.redis):
            raise UserError(
                "latency remote needs --device NAME and --redis URL (a worker: prunegym device serve --redis URL "
                "--name NAME)"
            )
        check_runtime(self.runtime)
        if self.remote_timeout <= 0:
            raise UserError(f"remote_timeout must be > 0 seconds, got {self.remote_timeout}")

    def measurement(self) -> LatencyConfig:
        """The measurement these options describe (runtime, provider, threads, batch, runs)."""
        return LatencyConfig(
            runtime=self.runtime,
            provider=self.provider,
            intra_op_threads=self.threads,
            batch_size=self.latency_batch,
            repeats=self.latency_repeats,
            warmup=max(3, self.latency_repeats // 5),
        )


@dataclass(frozen=True)
class EnvSpec:
    """Everything that defines a search problem; every option is a CLI flag and a config key.

    Build one from flat options with :meth:`from_options` (``EnvSpec.from_options(model="resnet20",
    data="cifar10:DIR", val_size=1000)``) or from nested configs.

    Args:
        model: zoo name, package.module:factory or file.py:factory (?key=value for its arguments), or a saved prunegym model (file or run folder).
        data: data spec (cifar10:DIR, digits, ...).
        weights: weights of the base model.
        seed: seeds the val split, the evaluator and the search.
        evaluator: how a candidate is scored.
        env: what an episode optimizes.
        latency_spec: how the device's latency enters.
        torch_threads: PyTorch intra-op threads of this process (empty: leave as is; 1 leaves a core to the
            latency session).
    """

    model: str
    data: str
    weights: str | None = None
    seed: int = 0
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    latency_spec: LatencySpec = field(default_factory=LatencySpec)
    torch_threads: int | None = 1

    @classmethod
    def from_options(cls, **options: Any) -> EnvSpec:
        """The spec of flat options (``val_size=1000``, ``target="latency"``).

        Raises:
            ConfigError: an unknown option, a value of the wrong type, or ``model``/``data`` missing.
        """
        return resolve_config(cls, file_values=options, flag_values={})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> EnvSpec:
        """The spec among ``values`` (a run's config.yaml, or a larger config's options); other keys ignored."""
        names = config_options(cls)
        return cls.from_options(**{k: v for k, v in values.items() if k in names})
