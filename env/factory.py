"""Build a :class:`PruningEnv` from plain options (a CLI config), also inside SB3 vector-env subprocesses."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
import torch

from prunegym.core.checkpoint import load_model
from prunegym.core.config import config_options, resolve_config
from prunegym.core.data import load_data
from prunegym.core.errors import UserError
from prunegym.core.evaluate import check_model_fits_data
from prunegym.core.onnxrt import resolve_provider
from prunegym.env.evaluator import Evaluator, EvaluatorConfig
from prunegym.env.latency import (
    LatencyConfig,
    LatencyModel,
    LatencyTable,
    MeasuredLatency,
    PredictedLatency,
    nchwc_block,
)
from prunegym.env.pruning_env import EnvConfig, PruningEnv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencySpec:
    """How the device's latency enters the search.

    Args:
        latency: none, measured (ONNX Runtime, every candidate) or predicted (a table from `prunegym latency build`).
        latency_table: the table for predicted latency.
        provider: ONNX Runtime execution provider (cpu, cuda, openvino, tensorrt).
        threads: intra-op threads of the latency session.
        latency_batch: batch size of a timed run.
        latency_repeats: timed runs per measurement (a fifth of them, at least 3, warm up first).
    """

    latency: str = "none"
    latency_table: str | None = None
    provider: str = "cpu"
    threads: int = 1
    latency_batch: int = 1
    latency_repeats: int = 30

    def __post_init__(self) -> None:
        if self.latency not in {"none", "measured", "predicted"}:
            raise UserError(f"latency must be none, measured or predicted, got {self.latency!r}")
        if self.latency == "predicted" and not self.latency_table:
            raise UserError("latency predicted needs --latency-table FILE (make one with `prunegym latency build`)")

    def measurement(self) -> LatencyConfig:
        """The ONNX Runtime measurement these options describe."""
        return LatencyConfig(
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


def default_round_to(how: LatencySpec) -> int:
    """The channel multiple a search rounds to when the user leaves it open: what the target device rewards.

    With a latency table, the table's own (it covers exactly those counts); with measured latency, ONNX Runtime's
    NCHWc block on this CPU (8 with AVX2, 16 with AVX-512); without latency, 1.
    """
    if how.latency == "predicted" and how.latency_table:
        return int(LatencyTable.read(how.latency_table).search["round_to"])
    if how.latency == "measured":
        return nchwc_block(resolve_provider(how.provider))
    return 1


def build_env(spec: EnvSpec) -> PruningEnv:
    """Load model and data, build the evaluator and latency model, and return the environment.

    Sets PyTorch's intra-op thread count to ``spec.torch_threads`` for this process (when not None): on a small
    shared CPU one thread scores candidates faster than two fighting for a core with the latency measurement.
    """
    if spec.torch_threads is not None:
        torch.set_num_threads(spec.torch_threads)
    val_size = spec.evaluator.val_size
    data = load_data(spec.data, val_size=max(val_size, 1) if val_size else None, seed=spec.seed)
    model = load_model(spec.model, weights=spec.weights, num_classes=data.num_classes, in_channels=data.in_channels)
    check_model_fits_data(model, input_shape=data.input_shape, num_classes=data.num_classes, data_name=spec.data)
    how = spec.latency_spec
    evaluator_config = spec.evaluator
    if evaluator_config.round_to is None:
        evaluator_config = replace(evaluator_config, round_to=default_round_to(how))
    evaluator = Evaluator(model=model, data=data, config=evaluator_config, input_shape=data.input_shape)
    evaluator.check_val_split()
    latency: LatencyModel | None = None
    if how.latency == "measured":
        latency = MeasuredLatency(base_model=model, input_shape=data.input_shape, config=how.measurement())
    elif how.latency == "predicted":
        latency = PredictedLatency.load(
            how.latency_table, evaluator=evaluator, provider=how.provider, threads=how.threads
        )
    return PruningEnv(evaluator=evaluator, config=spec.env, latency=latency)


def make_env(**options: Any) -> PruningEnv:
    """The Gymnasium entry point of ``prunegym/Pruning-v0``: :func:`build_env` of :meth:`EnvSpec.from_options`."""
    return build_env(EnvSpec.from_options(**options))


def make_env_fn(spec: EnvSpec) -> Callable[[], gym.Env]:
    """A picklable factory for ``DummyVecEnv``/``SubprocVecEnv`` (each process builds its own evaluator)."""
    return _EnvFactory(spec)


class _EnvFactory:
    def __init__(self, spec: EnvSpec) -> None:
        self.spec = spec

    def __call__(self) -> gym.Env:
        return build_env(self.spec)
