"""Predicted latency: a NetAdapt-style per-layer lookup table, profiled once on the target device.

Every conv/linear layer of the model is timed alone, as a tiny ONNX graph (the layer plus the BatchNorm and
activation that follow it in the model, at the layer's input size), for every (input channels, output
channels) pair the search can produce: the counts :func:`~prunegym.core.pruning.kept_channels` gives for
ratios in ``[0, max_ratio]`` at the table's ``round_to``. With ``grid_step > 1`` only every ``grid_step``-th
count per axis (plus both ends) is timed and the rest is interpolated bilinearly. Layers of the same shape
share their measurements (ResNet-56's 55 convs are 8 shapes).

The sum of the per-layer times misses what no single layer owns (the stem's input, residual additions,
pooling, layout reorders between layers, the runtime's per-run overhead) and over-counts each micro graph's
own overhead (its session run, and on x86 CPUs the reorders into and out of ONNX Runtime's blocked NCHWc
layout, which a chain of aligned layers in the full model does not pay). A correction is therefore fitted on
the measured latency of a dozen calibration models (the unpruned model, uniform ratios, channel counts
aligned to the SIMD block, random policies), whose interleaved rounds are spread over the profiling so
that the layer timings and the full models see the same shared machine. Two prediction modes are fitted:

- ``monotone`` (default): each layer's grid made monotone in its channel counts (the mean of its running
  maximum from below and running minimum from above) and ``min(intercept + slope * sum, unpruned measured)``:
  the prediction never rises when a ratio grows.
- ``aligned``: the raw grids and a separate slope for layers whose channel counts are multiples of the NCHWc
  block (:func:`nchwc_block`): follows the device where e.g. 64 channels run faster than 63.

What is timed: on the CPU provider at 1 intra-op thread, by default the CPU time of the calling thread per
run (``clock="cpu"``; ONNX Runtime computes on that thread, so this equals the wall-clock latency on an idle
core, while on a shared machine time-slicing by other processes inflates the wall clock by whole scheduler
slices and makes its median bimodal); else the wall clock. :func:`measure_interleaved` records both clocks.
Predicting needs no model and no ONNX export: ~55 lookups, tens of microseconds.

Tables are JSON, one per model *and* device: loading one profiled for another architecture, input size,
execution provider, thread count, batch, CPU or onnxruntime version raises a one-line :class:`UserError`.
"""

from __future__ import annotations

import bisect
import datetime as dt
import gc
import hashlib
import itertools
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from prunegym.core.errors import UserError
from prunegym.core.io import write_json
from prunegym.core.models import model_info
from prunegym.core.pruning import CostTable, LayerCost, cost_table, kept_channels
from prunegym.env.latency import LatencyConfig, make_session, random_input, time_runs

__all__ = [
    "CLOCKS",
    "FORMAT",
    "MODES",
    "VERSION",
    "InterleavedTimes",
    "LatencyCheck",
    "LatencyTable",
    "PredictedLatency",
    "TableBuildConfig",
    "architecture_hash",
    "build_latency_table",
    "check_latency_table",
    "device_info",
    "group_counts",
    "measure_interleaved",
    "nchwc_block",
    "plot_check",
    "random_policies",
    "resolve_clock",
]

log = logging.getLogger(__name__)

FORMAT = "prunegym-latency-table"
VERSION = 1
REBUILD = "rebuild it with `prunegym latency build`"
CLOCKS = ("auto", "cpu", "wall")
MODES = ("monotone", "aligned")
_ACTIVATIONS = {"relu": "relu", "relu_": "relu", "relu6": "relu6", "silu": "silu", "silu_": "silu",
                "hardswish": "hardswish", "hardswish_": "hardswish", "gelu": "gelu", "sigmoid": "sigmoid",
                "leaky_relu": "leaky_relu", "leaky_relu_": "leaky_relu"}  # fmt: skip
_DEVICE_KEYS = ("provider", "threads", "batch_size", "graph_optimization", "cpu", "onnxruntime")
# A progress callback: (stage, done, total). Build stages: "prepare" (calibration models pruned and exported),
# "layers" (shapes timed), "calibration" (interleaved rounds); check stages: "prune", "measure".
Progress = Callable[[str, int, int], None]


# ----------------------------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class TableBuildConfig:
    """How a table is profiled.

    Args:
        round_to: channel counts are rounded to this multiple (as the env's evaluator does).
        max_ratio: the largest ratio the search may choose; counts for ratios in [0, max_ratio] are profiled.
        grid_step: profile every ``grid_step``-th reachable count per axis (plus both ends) and interpolate
            bilinearly between them; 1 profiles every count.
        repeats: timed runs per layer shape, spread over ``rounds`` interleaved rounds (median of all).
        rounds: interleaved rounds over the shapes of one chunk.
        warmup: untimed runs of each micro graph before its first round.
        chunk: micro graphs timed together (interleaved) at a time.
        calib_policies: full models measured to fit the correction: the unpruned model, uniform ratios at half
            and all of max_ratio, then random policies; with fewer than 3 only an offset is fitted (0 acts as 1).
        calib_repeats: timed runs of each calibration model, spread over ``calib_rounds`` interleaved rounds.
        calib_rounds: interleaved rounds of the calibration models.
        mode: the default prediction mode, ``monotone`` or ``aligned`` (see :class:`PredictedLatency`); both
            are fitted and stored, a loader may pick either.
        clock: ``auto``, ``cpu`` or ``wall``: what the table predicts (see :func:`resolve_clock`).
        seed: seeds the random calibration policies.
    """

    round_to: int = 1
    max_ratio: float = 0.8
    grid_step: int = 1
    repeats: int = 200
    rounds: int = 5
    warmup: int = 5
    chunk: int = 64
    calib_policies: int = 12
    calib_repeats: int = 600
    calib_rounds: int = 60
    mode: str = "monotone"
    clock: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.round_to < 1:
            raise UserError(f"round_to must be >= 1, got {self.round_to}")
        if not 0.0 <= self.max_ratio < 1.0:
            raise UserError(f"max_ratio must be in [0, 1), got {self.max_ratio}")
        for name in ("grid_step", "repeats", "rounds", "chunk", "calib_repeats", "calib_rounds"):
            if getattr(self, name) < 1:
                raise UserError(f"latency table {name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0 or self.calib_policies < 0:
            raise UserError("latency table warmup and calib_policies must be >= 0")
        if self.mode not in MODES:
            raise UserError(f"unknown latency table mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.clock not in CLOCKS:
            raise UserError(f"unknown clock {self.clock!r}; use one of {', '.join(CLOCKS)}")


# ----------------------------------------------------------------------------------------------- identity


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_info(*, config: LatencyConfig) -> dict[str, Any]:
    """What makes a latency table valid on a machine: provider, threads, batch, CPU, onnxruntime version.

    ``machine`` and ``cpus`` are recorded but not compared.
    """
    from prunegym.env.latency import resolve_provider

    return {
        "provider": resolve_provider(config.provider),
        "threads": int(config.intra_op_threads),
        "batch_size": int(config.batch_size),
        "graph_optimization": config.graph_optimization,
        "cpu": _cpu_name(),
        "onnxruntime": ort.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def architecture_hash(model: nn.Module, *, input_shape: Sequence[int]) -> str:
    """A short hash of the model's module tree (names, types, hyper-parameters), tensor shapes and input shape.

    Weights do not enter it: a table holds for any weights of one architecture.
    """
    modules = [[n, type(m).__qualname__, m.extra_repr()] for n, m in model.named_modules()]
    state = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    blob = json.dumps({"modules": modules, "state": state, "input": [int(s) for s in input_shape]})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _model_name(model: nn.Module) -> str:
    info = model_info(model)
    return info.name if info else type(model).__name__


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)


# ----------------------------------------------------------------------------------------------- channel counts


def group_counts(channels: int, *, round_to: int, max_ratio: float, name: str | None = None) -> tuple[int, ...]:
    """Every channel count a group of ``channels`` can keep for ratios in [0, max_ratio], ascending."""
    lowest = math.floor(channels * (1.0 - max_ratio) + 1e-6)
    if lowest < 1:
        raise UserError(
            f"max_ratio {max_ratio} leaves no channel of group '{name}' ({channels} channels); lower max_ratio"
        )
    counts = set()
    for raw in range(lowest, channels + 1):
        # a ratio whose floor(n * (1 - r)) is exactly ``raw``
        counts.add(kept_channels(channels, 1.0 - (raw + 0.5) / channels, round_to, name=name))
    return tuple(sorted(counts))


def _shrink(features: int, count: int, n: int, kept: int) -> int:
    """Features left of a layer side after its group of ``n`` channels keeps ``kept`` (as :class:`CostTable`)."""
    return features - count * (n - kept) // n


def _side_values(
    features: int, links: Sequence[tuple[str, int]], counts: Mapping[str, tuple[int, ...]], channels: Mapping[str, int]
) -> tuple[int, ...]:
    """Every feature count one side (input or output) of a layer can take."""
    if not links:
        return (features,)
    if len(links) == 1:
        g, c = links[0]
        return tuple(sorted({_shrink(features, c, channels[g], k) for k in counts[g]}))
    if math.prod(len(counts[g]) for g, _ in links) <= 20000:
        values = set()
        for combo in itertools.product(*(counts[g] for g, _ in links)):
            v = features
            for (g, c), k in zip(links, combo, strict=True):
                v = _shrink(v, c, channels[g], k)
            values.add(v)
        return tuple(sorted(values))
    lo = features
    for g, c in links:
        lo = _shrink(lo, c, channels[g], counts[g][0])
    return tuple(range(lo, features + 1))


def _thin(values: Sequence[int], step: int) -> tuple[int, ...]:
    """Every ``step``-th value counted from the largest, plus the smallest."""
    if step <= 1 or len(values) <= 2:
        return tuple(values)
    keep = set(values[::-1][::step]) | {values[0]}
    return tuple(sorted(keep))


# ----------------------------------------------------------------------------------------------- layer context


class _ActivationSpy(TorchFunctionMode):
    """Records which activation function is applied directly to a watched tensor (a conv/BN output)."""

    def __init__(self, watched: dict[int, str], found: dict[str, str]) -> None:
        super().__init__()
        self.watched = watched
        self.found = found

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        act = _ACTIVATIONS.get(name)
        if name == "hardtanh":
            lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
            hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
            act = "relu6" if (float(lo), float(hi)) == (0.0, 6.0) else None
        if act is not None and args and isinstance(args[0], torch.Tensor):
            owner = self.watched.get(id(args[0]))
            if owner is not None and owner not in self.found:
                self.found[owner] = act
        return func(*args, **kwargs)


@dataclass(frozen=True)
class _Context:
    input_shape: tuple[int, ...]  # without the batch dim
    norm: bool
    activation: str | None
    module: nn.Module = field(compare=False, repr=False)


def _layer_contexts(model: nn.Module, input_shape: Sequence[int]) -> dict[str, _Context]:
    """Input shape, following BatchNorm and following activation of every conv/linear, from one forward pass."""
    shapes: dict[str, tuple[int, ...]] = {}
    watched: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # keeps watched tensors alive so their ids stay unique
    norms: dict[str, bool] = {}
    acts: dict[str, str] = {}
    modules = dict(model.named_modules())
    handles = []

    def layer_hook(name: str) -> Callable:
        def hook(_m: nn.Module, inp: tuple, out: Any) -> None:
            if name in shapes or not inp or not isinstance(out, torch.Tensor):
                return
            shapes[name] = tuple(int(s) for s in inp[0].shape[1:])
            watched[id(out)] = name
            keep.append(out)

        return hook

    def norm_hook(_m: nn.Module, inp: tuple, out: Any) -> None:
        owner = watched.get(id(inp[0])) if inp else None
        if owner is not None and isinstance(out, torch.Tensor) and owner not in norms:
            norms[owner] = True
            watched[id(out)] = owner
            keep.append(out)

    for name, m in modules.items():
        if isinstance(m, nn.Conv2d | nn.Linear):
            handles.append(m.register_forward_hook(layer_hook(name)))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            handles.append(m.register_forward_hook(norm_hook))
    training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad(), _ActivationSpy(watched, acts):
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    return {n: _Context(shapes[n], norms.get(n, False), acts.get(n), modules[n]) for n in shapes}


def _signature(la: LayerCost, ctx: _Context) -> dict[str, Any]:
    """The shape-defining attributes of a layer but its channel counts; layers with equal ones share timings."""
    m = ctx.module
    if isinstance(m, nn.Conv2d):
        pad = m.padding if isinstance(m.padding, str) else [int(p) for p in m.padding]
        return {"kind": "conv", "kernel": list(m.kernel_size), "stride": list(m.stride), "padding": pad,
                "dilation": list(m.dilation), "groups": "depthwise" if la.depthwise else int(m.groups),
                "bias": m.bias is not None, "padding_mode": m.padding_mode, "input_size": list(ctx.input_shape[1:]),
                "norm": ctx.norm, "activation": ctx.activation}  # fmt: skip
    return {"kind": "linear", "bias": m.bias is not None, "input_size": list(ctx.input_shape[:-1]),
            "norm": ctx.norm, "activation": ctx.activation}  # fmt: skip


def _signature_key(sig: Mapping[str, Any]) -> str:
    size = "x".join(str(s) for s in sig["input_size"]) or "-"
    tail = ("+bn" if sig["norm"] else "") + (f"+{sig['activation']}" if sig["activation"] else "")
    if sig["kind"] == "linear":
        return f"linear{'' if sig['bias'] else '/nobias'}@{size}{tail}"
    k = "x".join(str(v) for v in sig["kernel"])
    s = "x".join(str(v) for v in sig["stride"])
    p = sig["padding"] if isinstance(sig["padding"], str) else "x".join(str(v) for v in sig["padding"])
    d = "x".join(str(v) for v in sig["dilation"])
    g = "dw" if sig["groups"] == "depthwise" else f"g{sig['groups']}"
    extra = "" if sig["padding_mode"] == "zeros" else f"/{sig['padding_mode']}"
    return f"conv{k}/s{s}/p{p}/d{d}/{g}{'/bias' if sig['bias'] else ''}{extra}@{size}{tail}"


def _activation_module(name: str | None) -> list[nn.Module]:
    table: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU,
                                                 "hardswish": nn.Hardswish, "gelu": nn.GELU, "sigmoid": nn.Sigmoid,
                                                 "leaky_relu": nn.LeakyReLU}  # fmt: skip
    return [table[name]()] if name in table else []


def _micro_graph(sig: Mapping[str, Any], cin: int, cout: int) -> tuple[nn.Module, tuple[int, ...]]:
    """The one-layer model of a signature at (cin, cout) and its input shape (without batch)."""
    if sig["kind"] == "linear":
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(cin, cout, bias=sig["bias"])]
        if sig["norm"]:
            layers.append(nn.BatchNorm1d(cout))
        return nn.Sequential(*layers, *_activation_module(sig["activation"])).eval(), (cin, 1, 1)
    groups = cin if sig["groups"] == "depthwise" else int(sig["groups"])
    padding = sig["padding"] if isinstance(sig["padding"], str) else tuple(sig["padding"])
    conv = nn.Conv2d(cin, cout, tuple(sig["kernel"]), stride=tuple(sig["stride"]), padding=padding,
                     dilation=tuple(sig["dilation"]), groups=groups, bias=sig["bias"],
                     padding_mode=sig["padding_mode"])  # fmt: skip
    layers = [conv, *([nn.BatchNorm2d(cout)] if sig["norm"] else []), *_activation_module(sig["activation"])]
    return nn.Sequential(*layers).eval(), (cin, *sig["input_size"])


def _export_micro(net: nn.Module, shape: tuple[int, ...]) -> bytes:
    from prunegym.core.onnx_export import export_onnx_bytes

    return export_onnx_bytes(net, input_shape=shape)


# ----------------------------------------------------------------------------------------------- measuring


def resolve_clock(clock: str, *, config: LatencyConfig) -> str:
    """The clock to time with: ``wall`` (perf_counter) or ``cpu`` (CPU time of the calling thread).

    ``auto`` picks ``cpu`` for the CPU provider at 1 intra-op thread (ONNX Runtime then computes on the calling
    thread, so its CPU time is the run's latency on an idle core, and time-slicing by other processes on a
    shared machine does not inflate it) and ``wall`` otherwise.
    """
    from prunegym.env.latency import resolve_provider

    if clock not in CLOCKS:
        raise UserError(f"unknown clock {clock!r}; use one of {', '.join(CLOCKS)}")
    single = resolve_provider(config.provider) == "CPUExecutionProvider" and config.intra_op_threads == 1
    if clock == "auto":
        return "cpu" if single else "wall"
    if clock == "cpu" and not single:
        raise UserError(
            "the cpu clock counts the calling thread only, so it needs the cpu provider at 1 thread; use --clock wall"
        )
    return clock


@dataclass(frozen=True)
class InterleavedTimes:
    """Run times in ms of several models, shape (models, rounds, runs per round), on both clocks."""

    wall_ms: np.ndarray
    cpu_ms: np.ndarray

    def times(self, clock: str) -> np.ndarray:
        return self.cpu_ms if clock == "cpu" else self.wall_ms

    def median(self, clock: str) -> np.ndarray:
        """Per model: the median of all its runs (as :func:`measure_latency` reports for one model)."""
        t = self.times(clock)
        return np.median(t.reshape(len(t), -1), axis=1)

    def round_medians(self, clock: str) -> np.ndarray:
        """Per model and round: the median of that round's runs (the same model re-measured each round)."""
        return np.median(self.times(clock), axis=2)


def _time_both(
    session: ort.InferenceSession, feed: np.ndarray, *, warmup: int, repeats: int
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`~prunegym.env.latency.time_runs`, timing each run on the wall clock and the thread CPU clock."""
    binding = session.io_binding()
    binding.bind_cpu_input(session.get_inputs()[0].name, feed)
    for out in session.get_outputs():
        binding.bind_output(out.name)
    run = session.run_with_iobinding
    for _ in range(warmup):
        run(binding)
    wall = np.empty(repeats, dtype=np.float64)
    cpu = np.empty(repeats, dtype=np.float64)
    perf, thread = time.perf_counter, time.thread_time
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(repeats):
            t0, c0 = perf(), thread()
            run(binding)
            c1, t1 = thread(), perf()
            wall[i], cpu[i] = t1 - t0, c1 - c0
    finally:
        if gc_was_enabled:
            gc.enable()
    return wall * 1e3, cpu * 1e3


class _Interleaved:
    """Sessions of several ONNX models, warmed up once, then timed round by round (each round visits every model
    once, in an order rotated from round to round)."""

    def __init__(self, models: Sequence[bytes | Path | str], *, input_shapes: Sequence[Sequence[int]],
                 config: LatencyConfig, per_round: int, round_warmup: int = 2) -> None:  # fmt: skip
        if len(models) != len(input_shapes):
            raise ValueError("one input shape per model")
        self.per_round = per_round
        self.round_warmup = round_warmup
        self.sessions, self.feeds = [], []
        for model, shape in zip(models, input_shapes, strict=True):
            s = make_session(model, provider=config.provider, intra_op_threads=config.intra_op_threads,
                             inter_op_threads=config.inter_op_threads,
                             graph_optimization=config.graph_optimization)  # fmt: skip
            feed = random_input(s, batch_size=config.batch_size, input_shape=shape, seed=config.seed)
            time_runs(s, feed, warmup=config.warmup, repeats=1)
            self.sessions.append(s)
            self.feeds.append(feed)
        self.wall: list[list[np.ndarray]] = [[] for _ in models]
        self.cpu: list[list[np.ndarray]] = [[] for _ in models]

    @property
    def rounds(self) -> int:
        return len(self.wall[0]) if self.wall else 0

    def run_round(self, *, step: Callable[[], None] | None = None) -> None:
        n = len(self.sessions)
        shift = (self.rounds * 7) % max(n, 1)
        for i in [*range(shift, n), *range(shift)]:
            wall, cpu = _time_both(self.sessions[i], self.feeds[i], warmup=self.round_warmup, repeats=self.per_round)
            self.wall[i].append(wall)
            self.cpu[i].append(cpu)
            if step is not None:
                step()

    def times(self) -> InterleavedTimes:
        return InterleavedTimes(wall_ms=np.array(self.wall), cpu_ms=np.array(self.cpu))


def measure_interleaved(
    models: Sequence[bytes | Path | str],
    *,
    input_shapes: Sequence[Sequence[int]],
    config: LatencyConfig,
    rounds: int,
    repeats: int | None = None,
    round_warmup: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> InterleavedTimes:
    """Time several ONNX models in interleaved rounds, on the wall clock and the thread CPU clock at once.

    Every model gets its session and ``config.warmup`` untimed runs up front; then each round visits the
    models round-robin (in a rotated order) and times ``round_warmup`` untimed plus ``ceil(repeats / rounds)``
    runs of each (``repeats`` defaults to ``config.repeats``), so load changes on a shared machine hit all
    models alike. The median of all wall-clock runs is the statistic :func:`measure_latency` reports.
    """
    if rounds < 1:
        raise UserError(f"rounds must be >= 1, got {rounds}")
    per_round = max(1, math.ceil((repeats or config.repeats) / rounds))
    timer = _Interleaved(models, input_shapes=input_shapes, config=config, per_round=per_round,
                         round_warmup=round_warmup)  # fmt: skip
    done = [0]

    def step() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], rounds * len(models))

    for _ in range(rounds):
        timer.run_round(step=step)
    return timer.times()


# ----------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class _LayerEntry:
    """One conv/linear layer: how its channel counts follow the groups, and which counts were profiled."""

    name: str
    signature: str
    in_features: int
    out_features: int
    in_groups: tuple[tuple[str, int], ...]
    out_group: tuple[str, int] | None
    in_axis: tuple[int, ...]
    out_axis: tuple[int, ...]
    diagonal: bool  # depthwise: cin == cout, one axis

    def points(self) -> list[tuple[int, int]]:
        if self.diagonal:
            return [(c, c) for c in self.out_axis]
        return [(i, o) for i in self.in_axis for o in self.out_axis]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "signature": self.signature, "in_features": self.in_features,
                "out_features": self.out_features, "in_groups": [list(x) for x in self.in_groups],
                "out_group": list(self.out_group) if self.out_group else None, "in_axis": list(self.in_axis),
                "out_axis": list(self.out_axis), "diagonal": self.diagonal}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> _LayerEntry:
        return cls(name=str(d["name"]), signature=str(d["signature"]), in_features=int(d["in_features"]),
                   out_features=int(d["out_features"]),
                   in_groups=tuple((str(g), int(c)) for g, c in d["in_groups"]),
                   out_group=(str(d["out_group"][0]), int(d["out_group"][1])) if d["out_group"] else None,
                   in_axis=tuple(int(v) for v in d["in_axis"]), out_axis=tuple(int(v) for v in d["out_axis"]),
                   diagonal=bool(d["diagonal"]))  # fmt: skip


@dataclass(frozen=True)
class LatencyTable:
    """A profiled table: identity (model, device, search space), per-layer timings and the fitted correction.

    ``signatures`` maps a layer shape key to its attributes and ``points``: ``{(cin, cout): median ms}``.
    ``calibration`` holds ``intercept``, ``slope`` and the ``points`` (table sum, measured ms) it was fitted on.
    """

    model: Mapping[str, Any]
    device: Mapping[str, Any]
    search: Mapping[str, Any]
    groups: Mapping[str, int]
    layers: tuple[_LayerEntry, ...]
    signatures: Mapping[str, Mapping[str, Any]]
    calibration: Mapping[str, Any]
    created: str
    build_seconds: float
    source: Mapping[str, Any] = field(default_factory=dict)

    # -- persistence

    def to_dict(self) -> dict[str, Any]:
        sigs = {}
        for key, sig in self.signatures.items():
            pts = sorted(sig["points"].items())
            sigs[key] = {**{k: v for k, v in sig.items() if k != "points"},
                         "points": [[i, o, round(ms, 6)] for (i, o), ms in pts]}  # fmt: skip
        return {"format": FORMAT, "version": VERSION, "created": self.created,
                "build_seconds": round(self.build_seconds, 2), "model": dict(self.model),
                "device": dict(self.device), "search": dict(self.search), "source": dict(self.source),
                "groups": dict(self.groups), "calibration": dict(self.calibration),
                "layers": [la.to_dict() for la in self.layers], "signatures": sigs}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "latency table") -> LatencyTable:
        if d.get("format") != FORMAT:
            raise UserError(f"{source} is not a prunegym latency table (format {d.get('format')!r}); {REBUILD}")
        if d.get("version") != VERSION:
            raise UserError(f"{source} has table version {d.get('version')}, this prunegym reads {VERSION}; {REBUILD}")
        try:
            sigs = {k: {**{a: b for a, b in v.items() if a != "points"},
                        "points": {(int(i), int(o)): float(ms) for i, o, ms in v["points"]}}
                    for k, v in d["signatures"].items()}  # fmt: skip
            return cls(model=d["model"], device=d["device"], search=d["search"],
                       groups={str(k): int(v) for k, v in d["groups"].items()},
                       layers=tuple(_LayerEntry.from_dict(x) for x in d["layers"]), signatures=sigs,
                       calibration=d["calibration"], created=str(d.get("created", "")),
                       build_seconds=float(d.get("build_seconds", 0.0)), source=d.get("source") or {})  # fmt: skip
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UserError(f"{source} is a damaged latency table ({type(exc).__name__}: {exc}); {REBUILD}") from exc

    def save(self, path: Path | str) -> Path:
        return write_json(Path(path), self.to_dict())

    @classmethod
    def read(cls, path: Path | str) -> LatencyTable:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"latency table not found: {path}; make one with `prunegym latency build`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"latency table {path} is not valid JSON ({exc}); {REBUILD}") from exc
        if not isinstance(data, dict):
            raise UserError(f"latency table {path} is not a JSON object; {REBUILD}")
        return cls.from_dict(data, source=f"latency table {path}")

    # -- validity

    def check_model(self, model: nn.Module, *, input_shape: Sequence[int], source: str = "latency table") -> None:
        """UserError (one line) unless ``model``/``input_shape`` is the architecture the table was built for."""
        arch = architecture_hash(model, input_shape=input_shape)
        want = self.model
        if arch == want.get("arch_hash") and list(input_shape) == list(want.get("input_shape", [])):
            return
        raise UserError(
            f"{source} was built for model {want.get('name')} (arch {want.get('arch_hash')}, input "
            f"{_shape_text(want.get('input_shape', []))}), not this {_model_name(model)} (arch {arch}, input "
            f"{_shape_text(input_shape)}); {REBUILD} --model ... for this model"
        )

    def check_device(self, device: Mapping[str, Any], *, source: str = "latency table") -> None:
        """UserError (one line) naming every device field (provider, threads, CPU, ...) that differs."""
        diffs = [f"{k} {self.device.get(k)!r} ≠ {device.get(k)!r}" for k in _DEVICE_KEYS
                 if self.device.get(k) != device.get(k)]  # fmt: skip
        if diffs:
            raise UserError(
                f"{source} was profiled on another device or runtime setting ({', '.join(diffs)}: table ≠ this "
                f"run); {REBUILD} on this machine with --provider/--threads of this run"
            )

    def check_round_to(self, round_to: int, *, source: str = "latency table") -> None:
        """UserError unless every count reachable at ``round_to`` (ratios up to the table's max) is profiled."""
        max_ratio = float(self.search["max_ratio"])
        if int(self.search["round_to"]) == round_to:
            return
        for g, n in self.groups.items():
            have = group_counts(n, round_to=int(self.search["round_to"]), max_ratio=max_ratio, name=g)
            need = group_counts(n, round_to=round_to, max_ratio=max_ratio, name=g)
            if need[0] < have[0]:
                raise UserError(
                    f"{source} was built for round_to {self.search['round_to']} and does not cover group '{g}' "
                    f"at round_to {round_to} ({need[0]} < {have[0]} channels); {REBUILD} --round-to {round_to}"
                )


# ----------------------------------------------------------------------------------------------- predictor


def _monotone(grid: np.ndarray) -> np.ndarray:
    """A grid non-decreasing along both axes: the mean of its running max from below and running min from above."""
    upper = np.maximum.accumulate(np.maximum.accumulate(grid, axis=0), axis=1)
    lower = np.minimum.accumulate(np.minimum.accumulate(grid[::-1, ::-1], axis=0), axis=1)[::-1, ::-1]
    return (upper + lower) / 2.0


def _bracket(axis: Sequence[int], v: int) -> tuple[int, int, float]:
    """Indices ``i <= j`` around ``v`` in ``axis`` and the weight of ``j`` (outside: linear extrapolation)."""
    n = len(axis)
    if n == 1:
        return 0, 0, 0.0
    j = min(max(bisect.bisect_left(axis, v), 1), n - 1)
    i = j - 1
    if axis[j] == v:
        return j, j, 0.0
    return i, j, (v - axis[i]) / (axis[j] - axis[i])


class _Lookup:
    """Fast per-layer lookup: channel counts from the groups' kept counts, then bilinear interpolation."""

    def __init__(self, entry: _LayerEntry, points: Mapping[tuple[int, int], float], *, channels: Mapping[str, int],
                 monotone: bool) -> None:  # fmt: skip
        self.name = entry.name
        self.entry = entry
        self.in_links = [(g, c, channels[g]) for g, c in entry.in_groups]
        self.out_link = (
            (entry.out_group[0], entry.out_group[1], channels[entry.out_group[0]]) if entry.out_group else None
        )
        self.diagonal = entry.diagonal
        self.in_axis = list(entry.in_axis)
        self.out_axis = list(entry.out_axis)
        if self.diagonal:
            grid = np.array([[points[(c, c)] for c in self.out_axis]], dtype=np.float64)
        else:
            grid = np.array([[points[(i, o)] for o in self.out_axis] for i in self.in_axis], dtype=np.float64)
        self.grid = (_monotone(grid) if monotone else grid).tolist()
        self.min_in, self.min_out = self.in_axis[0], self.out_axis[0]
        self.last = (entry.in_features, entry.out_features)

    def channels(self, kept: Mapping[str, int]) -> tuple[int, int]:
        if self.diagonal:
            cout = self.entry.out_features
            if self.out_link is not None:
                g, c, n = self.out_link
                cout = _shrink(cout, c, n, kept[g])
            return cout, cout
        cin = self.entry.in_features
        for g, c, n in self.in_links:
            cin = _shrink(cin, c, n, kept[g])
        cout = self.entry.out_features
        if self.out_link is not None:
            g, c, n = self.out_link
            cout = _shrink(cout, c, n, kept[g])
        return cin, cout

    def ms(self, kept: Mapping[str, int]) -> tuple[float, bool]:
        """Predicted ms and whether a count lies below the profiled range (extrapolated); sets ``last``."""
        cin, cout = self.channels(kept)
        self.last = (cin, cout)
        g = self.grid
        j0, j1, tj = _bracket(self.out_axis, cout)
        if self.diagonal:
            v = g[0][j0] * (1 - tj) + g[0][j1] * tj
            return max(v, 0.0), cout < self.min_out
        i0, i1, ti = _bracket(self.in_axis, cin)
        a = g[i0][j0] * (1 - tj) + g[i0][j1] * tj
        b = g[i1][j0] * (1 - tj) + g[i1][j1] * tj
        return max(a * (1 - ti) + b * ti, 0.0), cin < self.min_in or cout < self.min_out


def nchwc_block(provider: str) -> int:
    """Channel block of ONNX Runtime's NCHWc convolutions on this CPU (16 with AVX-512, 8 with AVX/AVX2), else 1.

    Convs whose input and output channel counts are multiples of it run in the blocked layout, where a chain of
    them needs no layout reorders between layers; a micro graph of one such layer still pays a reorder at its
    input and output. The ``aligned`` mode gives those layers their own correction slope.
    """
    if provider != "CPUExecutionProvider" or platform.machine().lower() not in {"x86_64", "amd64"}:
        return 1
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 1
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    if "avx512f" in flags:
        return 16
    return 8 if "avx" in flags or "avx2" in flags else 1


class _Summer:
    """Per-layer table times of a candidate, summed separately over NCHWc-aligned and other layers."""

    def __init__(self, table: LatencyTable, *, group_order: Sequence[str], monotone: bool, block: int) -> None:
        self.group_order = tuple(group_order)
        self.block = block
        self.layers = [_Lookup(e, table.signatures[e.signature]["points"], channels=table.groups, monotone=monotone)
                       for e in table.layers]  # fmt: skip
        self.outside = False

    def sums(self, kept: Sequence[int]) -> tuple[float, float]:
        counts = dict(zip(self.group_order, kept, strict=True))
        aligned = other = 0.0
        b = self.block
        for la in self.layers:
            ms, out = la.ms(counts)
            self.outside |= out
            cin, cout = la.last
            if b > 1 and cin % b == 0 and cout % b == 0:
                aligned += ms
            else:
                other += ms
        return aligned, other


class PredictedLatency:
    """Latency in ms predicted from a :class:`LatencyTable`.

    Two modes, both fitted at build time on the same measurements:

    - ``monotone``: each layer's grid made monotone, ``min(intercept + slope * sum, cap_ms)``: more channels
      never predict less time, whatever the device does at particular channel counts. ``cap_ms`` is the
      unpruned model's measured latency: no candidate is predicted slower than it (a line through all the
      calibration models over-predicts the unpruned one, whose channel counts all fill the SIMD blocks).
    - ``aligned``: raw grids, ``intercept + slope_aligned * sum(aligned layers) + slope_other * sum(others)``
      (:func:`nchwc_block`): follows the device where channel counts that fill the SIMD blocks are faster than
      smaller unaligned ones, so the prediction may rise when a ratio grows past such a count.

    ``baseline_ms`` is the prediction for the unpruned model, so latency ratios of the env are 1 there.
    Needs no model (``needs_model = False``); a prediction takes tens of microseconds.
    """

    needs_model = False

    def __init__(self, *, table: LatencyTable, group_order: Sequence[str] | None = None,
                 mode: str | None = None) -> None:  # fmt: skip
        self.table = table
        self.group_order = tuple(group_order) if group_order is not None else tuple(table.groups)
        unknown = [g for g in self.group_order if g not in table.groups]
        if unknown:
            raise UserError(f"latency table has no group '{unknown[0]}'; {REBUILD} for this model")
        cal = table.calibration
        self.mode = mode or str(cal.get("default", table.search.get("mode", "monotone")))
        if self.mode not in MODES:
            raise UserError(f"unknown latency table mode {self.mode!r}; use one of {', '.join(MODES)}")
        fit = cal.get(self.mode) or {}
        self.intercept = float(fit.get("intercept", 0.0))
        self.slope_aligned = float(fit.get("slope_aligned", fit.get("slope", 1.0)))
        self.slope_other = float(fit.get("slope_other", fit.get("slope", 1.0)))
        self.cap_ms = float(fit["cap_ms"]) if fit.get("cap_ms") else math.inf
        block = int(table.search.get("align_block", 1)) if self.mode == "aligned" else 1
        self._summer = _Summer(table, group_order=self.group_order, monotone=self.mode == "monotone", block=block)
        self._layers = self._summer.layers
        self._cache: dict[tuple[int, ...], float] = {}
        self._warned = False
        self.baseline_ms = self.predict_kept(tuple(table.groups[g] for g in self.group_order))

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        evaluator: Any,
        provider: str = "cpu",
        threads: int = 1,
        batch_size: int | None = None,
    ) -> PredictedLatency:
        """Read a table and check it fits the evaluator's model, input shape and rounding and this device.

        ``provider``/``threads`` (and ``batch_size`` when given) are those the run would measure with; any
        difference from the table's, or another CPU or onnxruntime version, is a one-line UserError.
        """
        table = LatencyTable.read(path)
        source = f"latency table {path}"
        table.check_model(evaluator.model, input_shape=evaluator.input_shape, source=source)
        here = device_info(config=LatencyConfig(provider=provider, intra_op_threads=threads,
                                                batch_size=batch_size or int(table.device.get("batch_size", 1)),
                                                graph_optimization=str(table.device.get("graph_optimization",
                                                                                         "all"))))  # fmt: skip
        table.check_device(here, source=source)
        table.check_round_to(int(evaluator.config.round_to), source=source)
        groups = tuple(evaluator.table.channels)
        if dict(evaluator.table.channels) != dict(table.groups):
            raise UserError(f"{source} lists other prunable groups than this model's; {REBUILD} for this model")
        pred = cls(table=table, group_order=groups)
        log.info("predicted latency from %s: baseline %.3f ms (%d layers, %s, %d thread(s))", path, pred.baseline_ms,
                 len(table.layers), table.device.get("provider"), table.device.get("threads"))  # fmt: skip
        return pred

    # -- predictions

    def sums(self, kept: Sequence[int]) -> tuple[float, float]:
        """Uncorrected table times (ms) of the aligned and the other layers for kept counts (in ``group_order``)."""
        out = self._summer.sums(kept)
        if self._summer.outside and not self._warned:
            self._warned = True
            log.warning("a channel count lies below the latency table's profiled range (built for max_ratio %s); "
                        "extrapolating linearly", self.table.search.get("max_ratio"))  # fmt: skip
        return out

    def raw_kept(self, kept: Sequence[int]) -> float:
        """The uncorrected sum of per-layer table times for kept channel counts (in ``group_order``)."""
        return sum(self.sums(kept))

    def predict_kept(self, kept: Sequence[int]) -> float:
        key = tuple(int(k) for k in kept)
        hit = self._cache.get(key)
        if hit is None:
            aligned, other = self.sums(key)
            hit = min(self.intercept + self.slope_aligned * aligned + self.slope_other * other, self.cap_ms)
            if len(self._cache) > 65536:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def kept(self, ratios: Mapping[str, float]) -> tuple[int, ...]:
        rt = int(self.table.search["round_to"])
        return tuple(kept_channels(self.table.groups[g], float(ratios.get(g, 0.0)), rt, name=g)
                     for g in self.group_order)  # fmt: skip

    def predict(self, ratios: Mapping[str, float]) -> float:
        """Predicted latency (ms) of the model pruned with ``ratios`` (group → ratio), at the table's round_to."""
        return self.predict_kept(self.kept(ratios))

    def latency_ms(self, *, model: nn.Module | None, ratios: Mapping[str, float], kept: tuple[int, ...]) -> float:
        """The :class:`~prunegym.env.latency_models.LatencyModel` entry point; ``model`` is not used."""
        if len(kept) != len(self.group_order):
            return self.predict(ratios)
        return self.predict_kept(kept)

    def layer_ms(self, ratios: Mapping[str, float]) -> dict[str, float]:
        """Uncorrected per-layer table times (ms) of a policy, for inspection."""
        counts = dict(zip(self.group_order, self.kept(ratios), strict=True))
        return {la.name: la.ms(counts)[0] for la in self._layers}


# ----------------------------------------------------------------------------------------------- building


def random_policies(
    groups: Mapping[str, int] | Sequence[str], *, count: int, max_ratio: float, seed: int
) -> list[dict[str, float]]:
    """``count`` policies with every group's ratio uniform in [0, max_ratio] (seeded)."""
    rng = np.random.default_rng(seed)
    names = list(groups)
    return [{g: float(r) for g, r in zip(names, rng.uniform(0.0, max_ratio, len(names)), strict=True)}
            for _ in range(count)]  # fmt: skip


def _calibration_policies(
    channels: Mapping[str, int], *, count: int, max_ratio: float, seed: int, block: int
) -> list[dict[str, float]]:
    """The unpruned model, uniform ratios at 1/2 and 1 × max_ratio, every group cut to a multiple of ``block``
    near 60 % of its channels (when ``block`` > 1), then random policies (seeded)."""
    groups = list(channels)
    fixed = [dict.fromkeys(groups, 0.0), dict.fromkeys(groups, max_ratio / 2), dict.fromkeys(groups, max_ratio)]
    if block > 1:
        aligned = {}
        for g, n in channels.items():
            lowest = math.floor(n * (1.0 - max_ratio) + 1e-6)
            k = block * max(1, round(n * 0.6 / block))
            aligned[g] = 1.0 - k / n if lowest <= k < n else 0.0
        fixed.append(aligned)
    pols = fixed[: max(1, count)]
    rest = max(0, count - len(fixed))
    return pols + random_policies(groups, count=rest, max_ratio=max_ratio, seed=seed + 7919)


def _prune(model: nn.Module, ratios: Mapping[str, float], *, input_shape: Sequence[int], round_to: int) -> nn.Module:
    from prunegym.core.pruning import apply_policy

    if not any(r > 0 for r in ratios.values()):
        return model
    return apply_policy(model, dict(ratios), input_shape=tuple(input_shape), round_to=round_to)


def _export_full(model: nn.Module, input_shape: Sequence[int]) -> bytes:
    from prunegym.core.onnx_export import export_onnx_bytes

    return export_onnx_bytes(model, input_shape=input_shape)


def _r2_mape(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    ss = float(np.sum((y - np.mean(y)) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else 1.0
    return r2, float(np.mean(np.abs(pred - y) / y) * 100.0)


def _fit_line(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """``measured ≈ intercept + slope * table_sum`` by least squares; offset-only when the slope is unusable."""
    slope, intercept, method = 1.0, float(np.mean(y - x)), "offset"
    if len(x) >= 3 and np.ptp(x) > 0.05 * np.mean(x):
        s, c = np.polyfit(x, y, 1)
        if 0.2 <= s <= 5.0:
            slope, intercept, method = float(s), float(c), "linear"
        else:
            log.warning("calibration slope %.3f is implausible; falling back to an offset", s)
    r2, mape = _r2_mape(intercept + slope * x, y)
    return {"method": method, "intercept": intercept, "slope": slope, "r2": r2, "mape_pct": mape}


def _fit_two(aligned: np.ndarray, other: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """``measured ≈ intercept + slope_aligned * aligned + slope_other * other``; one line when not identifiable."""
    total = aligned + other
    if len(y) >= 4 and min(np.ptp(aligned), np.ptp(other)) > 0.05 * np.mean(total):
        design = np.stack([np.ones_like(y), aligned, other], axis=1)
        (c, sa, so), *_ = np.linalg.lstsq(design, y, rcond=None)
        if 0.2 <= sa <= 5.0 and 0.2 <= so <= 5.0:
            r2, mape = _r2_mape(c + sa * aligned + so * other, y)
            return {"method": "two-slope", "intercept": float(c), "slope_aligned": float(sa),
                    "slope_other": float(so), "r2": r2, "mape_pct": mape}  # fmt: skip
        log.warning("calibration slopes %.3f/%.3f are implausible; fitting one line", sa, so)
    return _fit_line(total, y)


def _partial_path(out: Path) -> Path:
    return out.with_name(out.stem + ".partial.json")


def build_latency_table(
    *,
    model: nn.Module,
    input_shape: Sequence[int],
    config: TableBuildConfig,
    latency: LatencyConfig,
    out: Path | str | None = None,
    source: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> LatencyTable:
    """Profile every conv/linear layer of ``model`` at every reachable channel count, then fit the correction.

    With ``out``, per-shape timings are saved as they come to ``<out stem>.partial.json`` (atomically) and
    a later call with the same model, device and settings resumes from them; the table itself is written to
    ``out`` and the partial file removed at the end. ``source`` (model/weights/data specs) is stored for
    ``prunegym latency check``.
    """
    start = time.perf_counter()
    input_shape = tuple(int(s) for s in input_shape)
    model = model.eval()
    costs: CostTable = cost_table(model, input_shape=input_shape)
    contexts = _layer_contexts(model, input_shape)
    channels = dict(costs.channels)
    counts = {g: group_counts(n, round_to=config.round_to, max_ratio=config.max_ratio, name=g)
              for g, n in channels.items()}  # fmt: skip
    entries: list[_LayerEntry] = []
    sigs: dict[str, dict[str, Any]] = {}
    for la in costs.layers:
        if la.kind not in ("conv", "linear"):
            continue
        ctx = contexts.get(la.name)
        if ctx is None:
            log.warning("layer %s does not run in the forward pass; left out of the latency table", la.name)
            continue
        if la.kind == "linear" and len(ctx.input_shape) != 1:
            raise UserError(f"cannot profile linear layer {la.name} with input {ctx.input_shape}; only 2-D inputs")
        sig = _signature(la, ctx)
        key = _signature_key(sig)
        sigs.setdefault(key, {**sig, "points": {}})
        out_g = la.out_group
        out_vals = _side_values(la.out_features, [out_g] if out_g else [], counts, channels)
        in_vals = _side_values(la.in_features, la.in_groups, counts, channels)
        diagonal = bool(la.depthwise)  # a depthwise conv has as many input channels as output channels
        if diagonal:
            in_vals = out_vals
        entries.append(_LayerEntry(la.name, key, la.in_features, la.out_features, tuple(la.in_groups), out_g,
                                   _thin(in_vals, config.grid_step), _thin(out_vals, config.grid_step),
                                   diagonal))  # fmt: skip
    if not entries:
        raise UserError("the model has no conv/linear layer to profile")
    device = device_info(config=latency)
    arch = architecture_hash(model, input_shape=input_shape)
    clock = resolve_clock(config.clock, config=latency)
    block = nchwc_block(device["provider"])
    search = {"round_to": config.round_to, "max_ratio": config.max_ratio, "grid_step": config.grid_step,
              "repeats": config.repeats, "rounds": config.rounds, "mode": config.mode, "clock": clock,
              "align_block": block}  # fmt: skip
    header = {"arch_hash": arch, "device": device, "search": search}
    needed: dict[str, set[tuple[int, int]]] = {}
    for e in entries:
        needed.setdefault(e.signature, set()).update(e.points())
    measured: dict[str, dict[tuple[int, int], float]] = {k: {} for k in sigs}
    partial = _partial_path(Path(out)) if out is not None else None
    if partial is not None and partial.is_file():
        try:
            saved = json.loads(partial.read_text(encoding="utf-8"))
            if saved.get("header") == json.loads(json.dumps(header)):
                for k, pts in saved.get("points", {}).items():
                    if k in measured:
                        measured[k].update({(int(i), int(o)): float(ms) for i, o, ms in pts})
                log.info("resuming from %s: %d shapes already timed", partial, sum(map(len, measured.values())))
            else:
                log.warning("ignoring %s: it was made for another model, device or settings", partial)
        except (json.JSONDecodeError, OSError, TypeError, ValueError) as exc:
            log.warning("ignoring unreadable %s (%s)", partial, exc)
    total = sum(len(v) for v in needed.values())
    done = sum(len(needed[k] & set(measured[k])) for k in needed)
    todo = {k: sorted(pts - set(measured[k])) for k, pts in needed.items()}
    chunks = [(k, v[c : c + config.chunk]) for k, v in todo.items() for c in range(0, len(v), config.chunk)]
    t_prepare = time.perf_counter()
    calib = _Calibration(model=model, channels=channels, input_shape=input_shape, config=config, latency=latency,
                         block=block, progress=progress)  # fmt: skip
    t_prepare = time.perf_counter() - t_prepare
    t_profile = time.perf_counter()
    # the calibration models' rounds are spread over the profiling, so that both see the same (shared) machine
    per_chunk = config.calib_rounds // (len(chunks) + 1)
    if progress is not None:
        progress("layers", done, total)
    for key, chunk in chunks:
        graphs, shapes = [], []
        for cin, cout in chunk:
            net, shape = _micro_graph(sigs[key], cin, cout)
            graphs.append(_export_micro(net, shape))
            shapes.append(shape)
        cfg = LatencyConfig(provider=latency.provider, intra_op_threads=latency.intra_op_threads,
                            inter_op_threads=latency.inter_op_threads, batch_size=latency.batch_size,
                            warmup=config.warmup, repeats=config.repeats,
                            graph_optimization=latency.graph_optimization, seed=latency.seed)  # fmt: skip
        times = measure_interleaved(graphs, input_shapes=shapes, config=cfg, rounds=config.rounds)
        for point, ms in zip(chunk, times.median(clock), strict=True):
            measured[key][point] = float(ms)
        done += len(chunk)
        if partial is not None:
            write_json(partial, {"header": header, "points": {k: [[i, o, ms] for (i, o), ms in v.items()]
                                                              for k, v in measured.items()}})  # fmt: skip
        if progress is not None:
            progress("layers", done, total)
        calib.run(per_chunk)
    calib.run(config.calib_rounds - calib.rounds)
    for key in sigs:
        sigs[key]["points"] = measured[key]
    t_profile = time.perf_counter() - t_profile
    info = model_info(model)
    table = LatencyTable(
        model={"name": _model_name(model), "arch_hash": arch, "input_shape": list(input_shape),
               "num_classes": info.num_classes if info else None,
               "in_channels": info.in_channels if info else int(input_shape[0])},
        device=device, search=search, groups=channels, layers=tuple(entries), signatures=sigs,
        calibration={},
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), build_seconds=0.0,
        source=dict(source or {}),
    )  # fmt: skip
    table = calib.fit(table)
    seconds = time.perf_counter() - start
    timing = {"prepare_seconds": round(t_prepare, 2), "profile_seconds": round(t_profile, 2)}
    table = replace(table, build_seconds=seconds, calibration={**table.calibration, **timing})
    if out is not None:
        table.save(out)
        if partial is not None:
            partial.unlink(missing_ok=True)
    log.info("latency table: %d layers, %d shapes timed in %.1f s", len(entries), total, seconds)
    return table


class _Calibration:
    """The calibration models (unpruned, uniform, random policies), pruned and exported up front, timed in
    interleaved rounds whenever :meth:`run` is called (between the layer chunks, so that the layer timings and
    the full models see the same shared machine), and the fit of ``intercept + slope * table sum``."""

    def __init__(self, *, model: nn.Module, channels: Mapping[str, int], input_shape: Sequence[int],
                 config: TableBuildConfig, latency: LatencyConfig, block: int,
                 progress: Progress | None) -> None:  # fmt: skip
        self.policies = _calibration_policies(channels, count=max(1, config.calib_policies),
                                              max_ratio=config.max_ratio, seed=config.seed, block=block)  # fmt: skip
        self.config = config
        self.progress = progress
        graphs = []
        for i, pol in enumerate(self.policies):
            net = _prune(model, pol, input_shape=input_shape, round_to=config.round_to)
            graphs.append(_export_full(net, input_shape))
            if progress is not None:
                progress("prepare", i + 1, len(self.policies))
        cfg = LatencyConfig(provider=latency.provider, intra_op_threads=latency.intra_op_threads,
                            inter_op_threads=latency.inter_op_threads, batch_size=latency.batch_size,
                            warmup=latency.warmup, graph_optimization=latency.graph_optimization,
                            seed=latency.seed)  # fmt: skip
        per_round = max(1, math.ceil(config.calib_repeats / config.calib_rounds))
        self.timer = _Interleaved(graphs, input_shapes=[tuple(input_shape)] * len(graphs), config=cfg,
                                  per_round=per_round)  # fmt: skip

    @property
    def rounds(self) -> int:
        return self.timer.rounds

    def run(self, rounds: int) -> None:
        for _ in range(max(0, rounds)):
            self.timer.run_round()
            if self.progress is not None:
                self.progress("calibration", self.rounds, self.config.calib_rounds)

    def fit(self, table: LatencyTable) -> LatencyTable:
        """Fit both modes' corrections on the calibration models' medians (on the table's clock)."""
        clock = str(table.search["clock"])
        y = np.asarray(self.timer.times().median(clock), dtype=np.float64)
        block = int(table.search.get("align_block", 1))
        mono = _Summer(table, group_order=tuple(table.groups), monotone=True, block=1)
        raw = _Summer(table, group_order=tuple(table.groups), monotone=False, block=block)
        names = ["unpruned", "uniform half", "uniform max", "aligned"][: min(len(self.policies), 4 if block > 1 else 3)]
        names += [f"random {i}" for i in range(len(self.policies) - len(names))]
        rows, sums_mono, sums_a, sums_o = [], [], [], []
        for name, pol, ms in zip(names, self.policies, y, strict=True):
            kept = tuple(kept_channels(table.groups[g], pol.get(g, 0.0), self.config.round_to, name=g)
                         for g in table.groups)  # fmt: skip
            m = sum(mono.sums(kept))
            a, o = raw.sums(kept)
            sums_mono.append(m)
            sums_a.append(a)
            sums_o.append(o)
            rows.append({"policy": name, "measured_ms": round(float(ms), 5), "sum_monotone_ms": round(m, 5),
                         "sum_aligned_ms": round(a, 5), "sum_other_ms": round(o, 5)})  # fmt: skip
        cal: dict[str, Any] = {
            "default": self.config.mode,
            "monotone": {**_fit_line(np.array(sums_mono), y), "cap_ms": round(float(y[0]), 5)},
            "aligned": _fit_two(np.array(sums_a), np.array(sums_o), y),
            "measured_baseline_ms": round(float(y[0]), 5),
            "policies": len(self.policies),
            "rounds": self.rounds,
            "points": rows,
        }
        for mode in MODES:
            f = cal[mode]
            log.info("calibration (%s) on %d models: %s, R² %.3f, MAPE %.2f%%", mode, len(y),
                     ", ".join(f"{k} {v:.4f}" for k, v in f.items() if k.startswith(("intercept", "slope"))), f["r2"],
                     f["mape_pct"])  # fmt: skip
        return replace(table, calibration=cal)


# ----------------------------------------------------------------------------------------------- checking


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _agreement(predicted: np.ndarray, times: InterleavedTimes, clock: str, *, build_ref: float | None,
               predicted_ref: float) -> dict[str, float]:  # fmt: skip
    """Error metrics of ``predicted`` against one clock's medians (model 0 of ``times`` is the unpruned
    reference, the rest the policies), that measurement's own noise, and the machine's drift since the build."""
    med = times.median(clock)
    ref, m = float(med[0]), med[1:]
    err = (predicted - m) / m
    rounds = times.round_medians(clock)[1:]
    cv = np.std(rounds, axis=1, ddof=1) / np.median(rounds, axis=1) if rounds.shape[1] > 1 else np.zeros(len(m))
    t = times.times(clock)[1:]
    if t.shape[1] >= 2:
        even = np.median(t[:, 0::2].reshape(len(t), -1), axis=1)
        odd = np.median(t[:, 1::2].reshape(len(t), -1), axis=1)
        split = _spearman(even, odd)
    else:
        split = float("nan")
    drift = ref / build_ref if build_ref else float("nan")
    corrected = (predicted * drift - m) / m
    return {"mape_pct": float(np.mean(np.abs(err)) * 100), "spearman": _spearman(predicted, m),
            "pearson": float(np.corrcoef(predicted, m)[0, 1]) if len(m) >= 3 else float("nan"),
            "max_abs_error_ms": float(np.max(np.abs(predicted - m))), "max_error_pct": float(np.max(np.abs(err)) * 100),
            "bias_pct": float(np.mean(err) * 100), "noise_pct": float(np.median(cv) * 100),
            "split_half_spearman": split, "measured_min_ms": float(np.min(m)), "measured_max_ms": float(np.max(m)),
            "unpruned_measured_ms": ref, "unpruned_predicted_ms": float(predicted_ref),
            "drift_since_build_pct": (drift - 1.0) * 100,
            "mape_drift_corrected_pct": float(np.mean(np.abs(corrected)) * 100)}  # fmt: skip


@dataclass(frozen=True)
class LatencyCheck:
    """Predicted vs measured latency of random policies, with the measurement's own noise.

    ``clock`` is the table's (what it predicts); ``metrics`` has one entry per clock measured (``cpu`` and
    ``wall`` on the CPU provider at 1 thread, else ``wall``): MAPE, Spearman, Pearson, max error, mean signed
    error (``bias_pct``), ``noise_pct`` (median over policies of the relative std of its per-round medians:
    the same policy re-measured ``rounds`` times) and ``split_half_spearman`` (rank agreement of the medians
    of the even and the odd rounds: how well the measurement agrees with itself, a ceiling for the predictor).
    The unpruned model is measured alongside as a reference: ``drift_since_build_pct`` compares it with its
    measurement at build time (a shared machine's speed drifts with its load), and ``mape_drift_corrected_pct``
    is the MAPE after scaling every prediction by that one factor (nothing is fitted on the checked policies).
    ``modes`` compares the table's prediction modes on the table's clock (``predicted_ms`` is ``mode``'s).
    """

    clock: str
    mode: str
    policies: tuple[Mapping[str, float], ...]
    predicted_ms: tuple[float, ...]
    measured_ms: Mapping[str, tuple[float, ...]]
    round_ms: Mapping[str, tuple[tuple[float, ...], ...]]
    metrics: Mapping[str, Mapping[str, float]]
    modes: Mapping[str, Mapping[str, float]]
    mode_predicted_ms: Mapping[str, tuple[float, ...]]
    rounds: int
    runs_per_round: int
    seconds: Mapping[str, float]

    @property
    def mape_pct(self) -> float:
        return float(self.metrics[self.clock]["mape_pct"])

    @property
    def spearman(self) -> float:
        return float(self.metrics[self.clock]["spearman"])

    def summary(self) -> dict[str, Any]:
        return {"policies": len(self.policies), "clock": self.clock, "mode": self.mode, "rounds": self.rounds,
                "runs_per_round": self.runs_per_round,
                "metrics": {c: {k: round(v, 4) for k, v in m.items()} for c, m in self.metrics.items()},
                "modes": {md: {k: round(v, 4) for k, v in m.items()} for md, m in self.modes.items()},
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for i, (p, a) in enumerate(zip(self.policies, self.predicted_ms, strict=True)):
            rows.append({"policy": {g: round(r, 4) for g, r in p.items()}, "predicted_ms": round(a, 5),
                         **{f"predicted_{md}_ms": round(v[i], 5) for md, v in self.mode_predicted_ms.items()},
                         **{f"measured_{c}_ms": round(v[i], 5) for c, v in self.measured_ms.items()}})  # fmt: skip
        return {**self.summary(), "rows": rows}


def check_latency_table(
    *,
    predictor: PredictedLatency,
    model: nn.Module,
    input_shape: Sequence[int],
    policies: int = 50,
    seed: int = 1,
    max_ratio: float | None = None,
    rounds: int = 100,
    repeats: int = 1000,
    latency: LatencyConfig | None = None,
    progress: Progress | None = None,
) -> LatencyCheck:
    """Predict and measure ``policies`` random policies (each ratio uniform in [0, max_ratio]).

    Each pruned model (:func:`~prunegym.core.pruning.apply_policy`, the table's round_to) is exported to ONNX
    and timed with the table's provider, threads and batch; the models are interleaved over ``rounds`` rounds
    (``repeats`` runs each in all). Measured = the median of all runs, on each clock.
    """
    table = predictor.table
    t0 = time.perf_counter()
    max_ratio = float(table.search["max_ratio"]) if max_ratio is None else max_ratio
    round_to = int(table.search["round_to"])
    clock = str(table.search.get("clock", "wall"))
    pols = random_policies(predictor.group_order, count=policies, max_ratio=max_ratio, seed=seed)
    predicted = np.array([predictor.predict(p) for p in pols])
    t_pred = time.perf_counter() - t0
    graphs = []
    t = time.perf_counter()
    graphs.append(_export_full(model, input_shape))  # the unpruned reference
    for i, pol in enumerate(pols):
        graphs.append(_export_full(_prune(model, pol, input_shape=input_shape, round_to=round_to), input_shape))
        if progress is not None:
            progress("prune", i + 1, len(pols))
    t_prune = time.perf_counter() - t
    dev = table.device
    cfg = latency or LatencyConfig(provider=str(dev["provider"]), intra_op_threads=int(dev["threads"]),
                                   batch_size=int(dev["batch_size"]),
                                   graph_optimization=str(dev.get("graph_optimization", "all")))  # fmt: skip
    t = time.perf_counter()
    times = measure_interleaved(graphs, input_shapes=[input_shape] * len(graphs), config=cfg, rounds=rounds,
                                repeats=repeats,
                                progress=(lambda d, n: progress("measure", d, n)) if progress else None)  # fmt: skip
    t_measure = time.perf_counter() - t
    clocks = (clock, "wall") if clock == "cpu" else (clock,)
    build_ref = table.calibration.get("measured_baseline_ms")
    modes, mode_pred = {}, {}
    for md in MODES:
        other = predictor if md == predictor.mode else PredictedLatency(table=table, group_order=predictor.group_order,
                                                                       mode=md)  # fmt: skip
        pm = np.array([other.predict(p) for p in pols])
        mode_pred[md] = tuple(float(v) for v in pm)
        met = _agreement(pm, times, clock, build_ref=build_ref, predicted_ref=other.baseline_ms)
        modes[md] = {k: met[k] for k in ("mape_pct", "spearman", "bias_pct", "mape_drift_corrected_pct",
                                         "unpruned_predicted_ms", "unpruned_measured_ms")}  # fmt: skip
    return LatencyCheck(
        clock=clock, mode=predictor.mode, policies=tuple(pols), predicted_ms=tuple(float(v) for v in predicted),
        modes=modes, mode_predicted_ms=mode_pred,
        measured_ms={c: tuple(float(v) for v in times.median(c)[1:]) for c in clocks},
        round_ms={c: tuple(tuple(float(x) for x in r) for r in times.round_medians(c)[1:]) for c in clocks},
        metrics={c: _agreement(predicted, times, c, build_ref=build_ref, predicted_ref=predictor.baseline_ms)
                 for c in clocks}, rounds=rounds,
        runs_per_round=int(times.wall_ms.shape[2]),
        seconds={"predict": t_pred, "prune+export": t_prune, "measure": t_measure,
                 "total": time.perf_counter() - t0},
    )  # fmt: skip


def plot_check(check: LatencyCheck, path: Path | str, *, title: str = "") -> Path:
    """Scatter of predicted vs measured latency (one panel per clock) with the y = x line, written as PNG.

    Horizontal bars: ±1 standard error of each measured median (std of its per-round medians / √rounds).
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prunegym.core.io import atomic_write_bytes

    clocks = list(check.measured_ms)
    fig, axes = plt.subplots(1, len(clocks), figsize=(5.2 * len(clocks), 5.0), squeeze=False)
    p = np.array(check.predicted_ms)
    for ax, clock in zip(axes[0], clocks, strict=True):
        m = np.array(check.measured_ms[clock])
        rounds = np.array(check.round_ms[clock])
        se = np.std(rounds, axis=1, ddof=1) / np.sqrt(rounds.shape[1]) if rounds.shape[1] > 1 else np.zeros(len(m))
        lo, hi = float(min(m.min(), p.min())) * 0.96, float(max(m.max(), p.max())) * 1.04
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, ls="--", label="y = x")
        ax.errorbar(m, p, xerr=se, fmt="o", ms=4, alpha=0.8, elinewidth=0.8,
                    label="policy (bar: ±1 s.e. of the measured median)")  # fmt: skip
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        what = "thread CPU time" if clock == "cpu" else "wall clock"
        primary = " (what the table predicts)" if clock == check.clock else ""
        ax.set_xlabel(f"measured latency, {what}{primary} (ms, median)")
        ax.set_ylabel("predicted latency (ms)")
        ax.set_title(title or "latency table check", fontsize=10)
        met = check.metrics[clock]
        ax.text(0.03, 0.97, f"MAPE {met['mape_pct']:.2f}%\nSpearman {met['spearman']:.3f}\n"
                f"noise (round CV) {met['noise_pct']:.2f}%\nsplit-half ρ {met['split_half_spearman']:.3f}",
                transform=ax.transAxes, va="top", fontsize=9)  # fmt: skip
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.8), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(Path(path), buf.getvalue())
