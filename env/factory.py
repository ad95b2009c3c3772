"""Build a :class:`PruningEnv` from plain options (a CLI config), also inside SB3 vector-env subprocesses."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import gymnasium as gym
import torch

from prunegym.core.checkpoint import load_model
from prunegym.core.data import load_data
from prunegym.core.errors import UserError
from prunegym.core.evaluate import check_model_fits_data
from prunegym.env.evaluator import Evaluator, EvaluatorConfig
from prunegym.env.latency import LatencyConfig, LatencyModel, MeasuredLatency, PredictedLatency
from prunegym.env.pruning_env import EnvConfig, PruningEnv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnvSpec:
    """Everything that defines a search problem; every field is a CLI flag and a config key."""

    model: str
    data: str
    weights: str | None = None
    seed: int = 0
    # evaluator
    val_size: int = 5000
    bn_recalib_images: int = 500
    bn_recalib_augment: str | None = None  # None: the dataset's training augmentation
    finetune_steps: int = 0
    finetune_lr: float = 0.01
    criterion: str = "l1"
    round_to: int = 1
    # episode
    target: str = "macs"
    target_ratio: float = 0.5
    reward: str = "acc"
    min_ratio: float = 0.0
    max_ratio: float = 0.8
    action_wall: bool = True
    latency_weight: float = -0.07
    # device latency
    latency: str = "none"  # none | measured | predicted
    latency_table: str | None = None
    provider: str = "cpu"
    threads: int = 1
    latency_batch: int = 1
    latency_repeats: int = 30
    # process
    torch_threads: int | None = 1  # intra-op threads for pruning/scoring (1 leaves a core to the latency session)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> EnvSpec:
        """The spec among ``values`` (a run's config.yaml, or a larger config dataclass's fields); others ignored."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def __post_init__(self) -> None:
        if self.latency not in {"none", "measured", "predicted"}:
            raise UserError(f"latency must be none, measured or predicted, got {self.latency!r}")
        if self.latency == "predicted" and not self.latency_table:
            raise UserError("latency predicted needs --latency-table FILE (make one with `prunegym latency build`)")


def _pick(cls: type, spec: EnvSpec, **renames: str) -> dict:
    names = {f.name for f in fields(cls)}
    out = {k: getattr(spec, k) for k in names if hasattr(spec, k)}
    for dst, src in renames.items():
        out[dst] = getattr(spec, src)
    return out


def evaluator_config(spec: EnvSpec) -> EvaluatorConfig:
    return EvaluatorConfig(**_pick(EvaluatorConfig, spec))


def env_config(spec: EnvSpec) -> EnvConfig:
    return EnvConfig(**_pick(EnvConfig, spec))


def latency_config(spec: EnvSpec) -> LatencyConfig:
    return LatencyConfig(provider=spec.provider, intra_op_threads=spec.threads, batch_size=spec.latency_batch,
                         repeats=spec.latency_repeats, warmup=max(3, spec.latency_repeats // 5))  # fmt: skip


def build_env(spec: EnvSpec) -> PruningEnv:
    """Load model and data, build the evaluator and latency model, and return the environment.

    Sets PyTorch's intra-op thread count to ``spec.torch_threads`` for this process (when not None): on a small
    shared CPU one thread scores candidates faster than two fighting for a core with the latency measurement.
    """
    if spec.torch_threads is not None:
        torch.set_num_threads(spec.torch_threads)
    data = load_data(spec.data, val_size=max(spec.val_size, 1) if spec.val_size else None, seed=spec.seed)
    model = load_model(spec.model, weights=spec.weights, num_classes=data.num_classes, in_channels=data.in_channels)
    check_model_fits_data(model, input_shape=data.input_shape, num_classes=data.num_classes, data_name=spec.data)
    evaluator = Evaluator(model=model, data=data, config=evaluator_config(spec), input_shape=data.input_shape)
    latency: LatencyModel | None = None
    if spec.latency == "measured":
        latency = MeasuredLatency(base_model=model, input_shape=data.input_shape, config=latency_config(spec))
    elif spec.latency == "predicted":
        latency = PredictedLatency.load(spec.latency_table, evaluator=evaluator, provider=spec.provider,
                                        threads=spec.threads)  # fmt: skip
    return PruningEnv(evaluator=evaluator, config=env_config(spec), latency=latency)


def make_env_fn(spec: EnvSpec) -> Callable[[], gym.Env]:
    """A picklable factory for ``DummyVecEnv``/``SubprocVecEnv`` (each process builds its own evaluator)."""
    return _EnvFactory(spec)


class _EnvFactory:
    def __init__(self, spec: EnvSpec) -> None:
        self.spec = spec

    def __call__(self) -> gym.Env:
        return build_env(self.spec)
