"""Building a latency table: profile every layer shape the search can produce, then fit the correction.

What is timed: on the CPU provider at 1 intra-op thread, by default the CPU time of the calling thread per
run (``clock="cpu"``, see :func:`~prunegym.core.onnxrt.resolve_clock`); else the wall clock. Layer shapes
are timed in chunks of interleaved micro graphs (:func:`~prunegym.core.onnxrt.measure_interleaved`), and the
calibration models' rounds (:class:`~prunegym.env.latency.calibration.Calibration`) run between the chunks.
A build writes its per-shape timings to a partial file as they come, and a later build resumes from it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from prunegym.core.errors import UserError
from prunegym.core.io import write_json
from prunegym.core.models import model_info
from prunegym.core.onnxrt import LatencyConfig, measure_interleaved, resolve_clock, resolve_provider
from prunegym.core.pruning import CostTable, block_groups, cost_table
from prunegym.core.remote import RemoteDevice
from prunegym.env.latency.calibration import Calibration
from prunegym.env.latency.config import Progress, TableBuildConfig
from prunegym.env.latency.grids import group_counts, side_values, thin_axis
from prunegym.env.latency.predict import nchwc_block
from prunegym.env.latency.profiling import (
    LayerContext,
    export_micro_graph,
    layer_contexts,
    layer_signature,
    micro_graph,
    signature_key,
)
from prunegym.env.latency.remote import device_round_to
from prunegym.env.latency.table import LatencyTable, LayerEntry, architecture_hash, device_info, model_name

__all__ = ["build_latency_table", "partial_path"]

log = logging.getLogger(__name__)

Points = dict[str, dict[tuple[int, int], float]]  # signature key → {(cin, cout): median ms}


def partial_path(out: Path) -> Path:
    """Where a build of ``out`` keeps its per-shape timings until it completes: ``<out stem>.partial.json``."""
    return out.with_name(out.stem + ".partial.json")


def _layer_entries(
    costs: CostTable, contexts: Mapping[str, LayerContext], *, config: TableBuildConfig
) -> tuple[list[LayerEntry], dict[str, dict[str, Any]]]:
    """The table entry of every conv/linear layer that runs, and the shape signatures they share.

    Raises:
        UserError: a linear layer with a non-flat input, or no conv/linear layer at all.
    """
    channels = dict(costs.channels)
    counts = {
        g: group_counts(n, round_to=config.round_to, max_ratio=config.max_ratio, name=g) for g, n in channels.items()
    }
    entries: list[LayerEntry] = []
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
        sig = layer_signature(la, ctx)
        key = signature_key(sig)
        sigs.setdefault(key, {**sig, "points": {}})
        out_g = la.out_group
        out_vals = side_values(la.out_features, [out_g] if out_g else [], counts, channels)
        in_vals = side_values(la.in_features, la.in_groups, counts, channels)
        diagonal = bool(la.depthwise)  # a depthwise conv has as many input channels as output channels
        if diagonal:
            in_vals = out_vals
        entries.append(
            LayerEntry(
                la.name,
                key,
                la.in_features,
                la.out_features,
                tuple(la.in_groups),
                out_g,
                thin_axis(in_vals, config.grid_step),
                thin_axis(out_vals, config.grid_step),
                diagonal,
            )
        )
    if not entries:
        raise UserError("the model has no conv/linear layer to profile")
    return entries, sigs


def _resume(partial: Path | None, header: Mapping[str, Any], measured: Points) -> None:
    """Fill ``measured`` from a partial file made with the same ``header`` (else log why it is ignored)."""
    if partial is None or not partial.is_file():
        return
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


def _time_chunk(
    sig: Mapping[str, Any],
    chunk: Sequence[tuple[int, int]],
    *,
    config: TableBuildConfig,
    latency: LatencyConfig,
    clock: str,
    remote: RemoteDevice | None = None,
) -> list[float]:
    """Median ms on ``clock`` of the micro graphs of ``sig`` at each (cin, cout) of ``chunk``, interleaved (on the
    ``remote`` device when given)."""
    graphs, shapes = [], []
    for cin, cout in chunk:
        net, shape = micro_graph(sig, cin, cout)
        graphs.append(export_micro_graph(net, shape))
        shapes.append(shape)
    cfg = LatencyConfig(
        provider=latency.provider,
        intra_op_threads=latency.intra_op_threads,
        inter_op_threads=latency.inter_op_threads,
        batch_size=latency.batch_size,
        warmup=config.warmup,
        repeats=config.repeats,
        graph_optimization=latency.graph_optimization,
        seed=latency.seed,
        runtime=latency.runtime,
    )
    if remote is not None:
        times = remote.measure_interleaved(graphs, input_shapes=shapes, config=cfg, rounds=config.rounds)
    else:
        times = measure_interleaved(graphs, input_shapes=shapes, config=cfg, rounds=config.rounds)
    return [float(ms) for ms in times.median(clock)]


def _profile(
    entries: Sequence[LayerEntry],
    sigs: Mapping[str, Mapping[str, Any]],
    measured: Points,
    *,
    calib: Calibration,
    config: TableBuildConfig,
    latency: LatencyConfig,
    clock: str,
    header: Mapping[str, Any],
    partial: Path | None,
    progress: Progress | None,
    remote: RemoteDevice | None = None,
) -> int:
    """Time every (cin, cout) not in ``measured`` yet, chunk by chunk, saving ``partial`` after each chunk.

    The calibration models' rounds are spread over the chunks, so that both see the same (shared) machine.

    Returns:
        The number of layer shapes the table holds.
    """
    needed: dict[str, set[tuple[int, int]]] = {}
    for e in entries:
        needed.setdefault(e.signature, set()).update(e.points())
    total = sum(len(v) for v in needed.values())
    done = sum(len(needed[k] & set(measured[k])) for k in needed)
    todo = {k: sorted(pts - set(measured[k])) for k, pts in needed.items()}
    chunks = [(k, v[c : c + config.chunk]) for k, v in todo.items() for c in range(0, len(v), config.chunk)]
    per_chunk = config.calib_rounds // (len(chunks) + 1)
    if progress is not None:
        progress("layers", done, total)
    for key, chunk in chunks:
        for point, ms in zip(
            chunk,
            _time_chunk(sigs[key], chunk, config=config, latency=latency, clock=clock, remote=remote),
            strict=True,
        ):
            measured[key][point] = ms
        done += len(chunk)
        if partial is not None:
            write_json(
                partial,
                {
                    "header": header,
                    "points": {k: [[i, o, ms] for (i, o), ms in v.items()] for k, v in measured.items()},
                },
            )
        if progress is not None:
            progress("layers", done, total)
        calib.run(per_chunk)
    calib.run(config.calib_rounds - calib.rounds)
    return total


def build_latency_table(
    *,
    model: nn.Module,
    input_shape: Sequence[int],
    config: TableBuildConfig,
    latency: LatencyConfig,
    out: Path | str | None = None,
    source: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    remote: RemoteDevice | None = None,
) -> LatencyTable:
    """Profile every conv/linear layer of ``model`` at every reachable channel count, then fit the correction.

    Args:
        model: the unpruned model (put in eval mode).
        input_shape: C×H×W of one input.
        config: what to profile and how often.
        latency: provider, threads, batch, warm-up of the calibration models, graph optimization, seed.
        out: where to write the table. Per-shape timings are saved as they come to :func:`partial_path`
            (atomically) and a later call with the same model, device and settings resumes from them; the
            partial file is removed once the table is written.
        source: model/weights/data specs, stored for ``prunegym latency check``.
        progress: called with (stage, done, total): "prepare", "layers", "calibration".
        remote: profile on this remote device (its worker's runtime and threads) instead of here; its calibration
            rounds run in one job at the end.

    Returns:
        The table (also written to ``out`` when given).

    Raises:
        UserError: a model without conv/linear layers, a max_ratio that leaves a group empty, a clock the
            device cannot use, an unavailable provider.
    """
    start = time.perf_counter()
    host = remote.record if remote is not None else None
    if remote is not None:
        latency = replace(latency, runtime=remote.runtime, intra_op_threads=remote.threads)
    device = device_info(config=latency, host=host)
    if remote is not None:
        device["remote_device"] = remote.device
    local_ort = remote is None and latency.runtime == "ort"
    block = nchwc_block(resolve_provider(latency.provider)) if local_ort else device_round_to(device)
    if config.round_to is None:
        config = replace(config, round_to=block)
    input_shape = tuple(int(s) for s in input_shape)
    model = model.eval()
    costs: CostTable = cost_table(model, input_shape=input_shape)
    entries, sigs = _layer_entries(costs, layer_contexts(model, input_shape), config=config)
    channels = dict(costs.channels)
    arch = architecture_hash(model, input_shape=input_shape)
    clock = resolve_clock(config.clock, config=latency)
    blocks = block_groups(model, list(channels)) if config.depth else {}
    search = {
        "round_to": config.round_to,
        "max_ratio": config.max_ratio,
        "grid_step": config.grid_step,
        "repeats": config.repeats,
        "rounds": config.rounds,
        "mode": config.mode,
        "clock": clock,
        "align_block": block,
        "blocks": blocks,
    }
    header = {"arch_hash": arch, "device": device, "search": search}
    measured: Points = {k: {} for k in sigs}
    partial = partial_path(Path(out)) if out is not None else None
    _resume(partial, header, measured)
    t_prepare = time.perf_counter()
    calib = Calibration(
        model=model,
        channels=channels,
        blocks=blocks,
        input_shape=input_shape,
        config=config,
        latency=latency,
        block=block,
        progress=progress,
        remote=remote,
    )
    t_prepare = time.perf_counter() - t_prepare
    t_profile = time.perf_counter()
    total = _profile(
        entries,
        sigs,
        measured,
        calib=calib,
        config=config,
        latency=latency,
        clock=clock,
        header=header,
        partial=partial,
        progress=progress,
        remote=remote,
    )
    for key in sigs:
        sigs[key]["points"] = measured[key]
    t_profile = time.perf_counter() - t_profile
    info = model_info(model)
    table = LatencyTable(
        model={
            "name": model_name(model),
            "arch_hash": arch,
            "input_shape": list(input_shape),
            "num_classes": info.num_classes if info else None,
            "in_channels": info.in_channels if info else int(input_shape[0]),
        },
        device=device,
        search=search,
        groups=channels,
        layers=tuple(entries),
        signatures=sigs,
        calibration={},
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        build_seconds=0.0,
        source=dict(source or {}),
    )
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
