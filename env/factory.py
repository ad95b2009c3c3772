"""Build a :class:`PruningEnv` from plain options (a CLI config), also inside SB3 vector-env subprocesses."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import gymnasium as gym
import torch

from prunegym.core.checkpoint import load_model
from prunegym.core.data import load_data
from prunegym.core.evaluate import check_model_fits_data
from prunegym.core.onnxrt import resolve_provider
from prunegym.env.evaluator import Evaluator
from prunegym.env.latency import (
    LatencyModel,
    LatencyTable,
    MeasuredLatency,
    PredictedLatency,
    RemoteLatency,
    device_round_to,
    nchwc_block,
)
from prunegym.env.pruning_env import PruningEnv
from prunegym.env.spec import EnvSpec, LatencySpec

log = logging.getLogger(__name__)


def default_round_to(how: LatencySpec) -> int:
    """The channel multiple a search rounds to when the user leaves it open: what the target device rewards.

    With a latency table, the table's own (it covers exactly those counts); with measured latency, ONNX Runtime's
    NCHWc block on this CPU (8 with AVX2, 16 with AVX-512; OpenVINO blocks alike); with remote latency, that of the
    device its worker registered; without latency, 1.
    """
    if how.latency == "predicted" and how.latency_table:
        return int(LatencyTable.read(how.latency_table).search["round_to"])
    if how.latency == "measured":
        provider = "CPUExecutionProvider" if how.runtime == "openvino" else resolve_provider(how.provider)
        return nchwc_block(provider)
    if how.latency == "remote" and how.redis and how.device:
        from prunegym.core.remote import DeviceQueue

        queue = DeviceQueue(how.redis)
        queue.ping()
        return device_round_to(queue.wait_for_device(how.device, timeout=how.remote_timeout))
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
    elif how.latency == "remote":
        assert how.device and how.redis, "LatencySpec checks both"
        latency = RemoteLatency(
            base_model=model,
            input_shape=data.input_shape,
            config=how.measurement(),
            device=how.device,
            redis=how.redis,
            runtime=how.runtime,
            timeout=how.remote_timeout,
        )
    elif how.latency == "predicted":
        latency = PredictedLatency.load(
            how.latency_table, evaluator=evaluator, provider=how.provider, threads=how.threads, runtime=how.runtime
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
