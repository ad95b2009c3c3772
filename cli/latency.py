"""``prunegym latency build`` and ``prunegym latency check``: the predicted-latency lookup table."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from prunegym.cli.util import add_command, add_config_flags, config_from_args, print_json, progress_bar, stdout
from prunegym.core.errors import UserError
from prunegym.core.io import write_json
from prunegym.env.latency.config import TableBuildConfig

log = logging.getLogger(__name__)

__all__ = ["LatencyBuildSpec", "LatencyCheckSpec", "cmd_build", "cmd_check", "register"]


@dataclass(frozen=True)
class LatencyBuildSpec:
    """Options of ``prunegym latency build``; the model/data/latency flags are named as the env's.

    Args:
        model: zoo name, package.module:factory or file.py:factory (?key=value for its arguments), or a saved
            prunegym model.
        data: data spec (cifar10:DIR, digits, ...): gives the input shape and class count.
        out: the table (JSON) to write; <stem>.partial.json beside it holds timings while building.
        weights: weights of the base model (latency does not depend on them).
        table: how the table is profiled.
        provider: ONNX Runtime execution provider (cpu, cuda, openvino, tensorrt).
        runtime: the runtime that times the layers: ort (ONNX Runtime) or openvino; a table is per runtime.
        threads: intra-op threads of the latency sessions (remote: the worker's --threads).
        latency_batch: batch size of the timed runs.
        resume: reuse timings of an interrupted build (<stem>.partial.json).
        torch_threads: PyTorch intra-op threads of this process (exports only).
        latency: local (profile on this machine) or remote (on the device --device served through --redis).
        device: the remote device's name (`prunegym device list`).
        redis: the Redis URL the remote device's worker listens on.
        remote_timeout: seconds to wait for the remote device and for each of its results.
    """

    model: str
    data: str
    out: str
    weights: str | None = None
    table: TableBuildConfig = field(default_factory=TableBuildConfig)
    provider: str = "cpu"
    runtime: str = "ort"
    threads: int = 1
    latency_batch: int = 1
    resume: bool = True
    torch_threads: int | None = 1
    latency: str = "local"
    device: str | None = None
    redis: str | None = None
    remote_timeout: float = 600.0

    def __post_init__(self) -> None:
        from prunegym.core.onnxrt import check_runtime

        check_runtime(self.runtime)
        if self.latency not in ("local", "remote"):
            raise UserError(f"latency must be local or remote, got {self.latency!r}")
        if self.latency == "remote" and not (self.device and self.redis):
            raise UserError("latency remote needs --device NAME and --redis URL (see prunegym device list)")


@dataclass(frozen=True)
class LatencyCheckSpec:
    """Options of ``prunegym latency check``; model, weights and data default to those the table was built from.

    Args:
        latency_table: table from `prunegym latency build`.
        policies: random policies to predict and measure.
        seed: seed of the random policies (keep it apart from the build's calibration seed).
        max_ratio: ratios uniform in [0, max_ratio] (default: the table's).
        rounds: interleaved measuring rounds (each policy re-measured this many times; on a shared machine the
            measurement needs many to agree with itself: see its split-half Spearman).
        repeats: timed runs per policy in all.
        plot: scatter plot PNG (default: the --out JSON's name with .png, else <table stem>-check.png).
        out: write the check (summary and every policy's prediction and measurement) as JSON here.
        model: model to prune (default: the table's).
        weights: its weights (default: the table's; latency does not depend on them).
        data: data spec for the input shape and class count (default: the table's).
        torch_threads: PyTorch intra-op threads of this process.
    """

    latency_table: str
    policies: int = 50
    seed: int = 1
    max_ratio: float | None = None
    rounds: int = 100
    repeats: int = 1000
    plot: str | None = None
    out: str | None = None
    model: str | None = None
    weights: str | None = None
    data: str | None = None
    torch_threads: int | None = 1


def _set_torch_threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


def _progress_callback(bar: Any, labels: dict[str, str]) -> Any:
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(labels.get(stage, stage), total=total, info="")
        bar.update(tasks[stage], completed=done, total=total)

    return update


def _fit_text(fit: dict[str, Any]) -> str:
    terms = [f"{fit['intercept']:+.4f}"]
    if "slope" in fit:
        terms.append(f"{fit['slope']:.4f} × sum")
    else:
        terms += [f"{fit['slope_aligned']:.4f} × aligned", f"{fit['slope_other']:.4f} × other"]
    if fit.get("curve"):
        terms.append(f"{fit['curve']:.4f} × sum²")
    if fit.get("block_ms"):
        terms.append(f"{fit['block_ms']:.4f} × removed blocks")
    cap = f", capped at {fit['cap_ms']:.3f}" if fit.get("cap_ms") else ""
    return f"{' + '.join(terms)} ms{cap} ({fit['method']}, R² {fit['r2']:.3f}, MAPE {fit['mape_pct']:.2f} %)"


def cmd_build(args: argparse.Namespace) -> int:
    from prunegym.cli.model import load_model_and_data
    from prunegym.env.latency import LatencyConfig, build_latency_table, partial_path

    spec = config_from_args(LatencyBuildSpec, args)
    _set_torch_threads(spec.torch_threads)
    config = spec.table
    latency = LatencyConfig(
        provider=spec.provider, intra_op_threads=spec.threads, batch_size=spec.latency_batch, runtime=spec.runtime
    )
    remote = None
    if spec.latency == "remote":
        from prunegym.core.remote import RemoteDevice

        assert spec.device and spec.redis
        remote = RemoteDevice(redis=spec.redis, device=spec.device, runtime=spec.runtime, timeout=spec.remote_timeout)
    out = Path(spec.out)
    if not spec.resume:
        partial_path(out).unlink(missing_ok=True)
    model, data = load_model_and_data(model=spec.model, weights=spec.weights, data=spec.data)
    assert data is not None
    weights = str(Path(spec.weights).resolve()) if spec.weights else None
    source = {
        "model": spec.model,
        "weights": weights,
        "data": spec.data,
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
    }
    start = time.perf_counter()
    with progress_bar() as bar:
        update = _progress_callback(
            bar,
            {
                "prepare": "calibration models (prune + export)",
                "layers": "layer shapes",
                "calibration": "calibration rounds",
            },
        )
        table = build_latency_table(
            model=model,
            input_shape=data.input_shape,
            config=config,
            latency=latency,
            out=out,
            source=source,
            progress=update,
            remote=remote,
        )
    seconds = time.perf_counter() - start
    cal = table.calibration
    shapes = sum(len(s["points"]) for s in table.signatures.values())
    summary = {
        "table": str(out),
        "model": table.model["name"],
        "layers": len(table.layers),
        "layer_shapes": len(table.signatures),
        "points": shapes,
        "groups": len(table.groups),
        "calibration": {
            k: cal[k]
            for k in ("default", "monotone", "aligned", "measured_baseline_ms", "policies", "rounds")
            if k in cal
        },
        "seconds": round(seconds, 1),
        "table_build_seconds": round(table.build_seconds, 1),
        "prepare_seconds": cal.get("prepare_seconds"),
        "profile_seconds": cal.get("profile_seconds"),
        "device": dict(table.device),
    }
    if args.json:
        print_json(summary)
        return 0
    t = Table(title=f"latency table {out}")
    t.add_column("what")
    t.add_column("value", justify="right")
    rows = [
        ("model", f"{table.model['name']} ({table.model['arch_hash']}, input {table.model['input_shape']})"),
        (
            "device",
            f"{table.device['runtime']} {table.device['runtime_version']} ({table.device['provider']}), "
            f"{table.device['threads']} thread(s), batch {table.device['batch_size']}, {table.device['cpu']} "
            f"({', '.join(table.device['cpu_flags'])})" + (f" on {spec.device}" if remote else ""),
        ),
        ("layers / shapes / points", f"{len(table.layers)} / {len(table.signatures)} / {shapes}"),
        (
            "search",
            f"round_to {table.search['round_to']}, max_ratio {config.max_ratio}, grid_step {config.grid_step}, "
            f"clock {table.search['clock']}, default mode {config.mode}",
        ),
        ("monotone correction", _fit_text(cal["monotone"])),
        ("aligned correction", _fit_text(cal["aligned"]) + f" (block {table.search.get('align_block')})"),
        ("calibration", f"{cal.get('policies')} models × {cal.get('rounds')} interleaved rounds"),
        ("measured unpruned", f"{cal.get('measured_baseline_ms', float('nan')):.3f} ms"),
        (
            "build time",
            f"{seconds:.1f} s (calibration models {cal.get('prepare_seconds', 0):.1f} s, profiling "
            f"{cal.get('profile_seconds', 0):.1f} s)",
        ),
    ]
    for k, v in rows:
        t.add_row(k, v)
    stdout.print(t)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from prunegym.core.checkpoint import load_model
    from prunegym.core.data import load_data
    from prunegym.env.latency import (
        LatencyConfig,
        LatencyTable,
        PredictedLatency,
        check_latency_table,
        device_info,
        plot_check,
    )

    spec = config_from_args(LatencyCheckSpec, args)
    _set_torch_threads(spec.torch_threads)
    if spec.policies < 2:
        raise UserError(f"--policies must be >= 2 to rank them, got {spec.policies}")
    path = Path(spec.latency_table)
    table = LatencyTable.read(path)
    source = dict(table.source)
    model_name = spec.model or source.get("model") or table.model.get("name")
    weights = spec.weights or source.get("weights")
    if weights and not Path(weights).exists():
        log.warning("weights %s not found; timing the architecture with random weights", weights)
        weights = None
    if spec.data:
        data = load_data(spec.data)
        input_shape, num_classes, in_channels = data.input_shape, data.num_classes, data.in_channels
    else:
        input_shape = tuple(int(s) for s in table.model["input_shape"])
        num_classes = int(source.get("num_classes") or table.model.get("num_classes") or 10)
        in_channels = int(source.get("in_channels") or input_shape[0])
    model = load_model(str(model_name), weights=weights, num_classes=num_classes, in_channels=in_channels)
    where = f"latency table {path}"
    table.check_model(model, input_shape=input_shape, source=where)
    dev = table.device
    config = LatencyConfig(
        provider=str(dev["provider"]),
        intra_op_threads=int(dev["threads"]),
        batch_size=int(dev["batch_size"]),
        graph_optimization=str(dev.get("graph_optimization", "all")),
        runtime=str(dev.get("runtime", "ort")),
    )
    table.check_device(device_info(config=config), source=where)
    predictor = PredictedLatency(table=table)
    with progress_bar() as bar:
        update = _progress_callback(bar, {"prune": "prune + export", "measure": "measure (interleaved)"})
        check = check_latency_table(
            predictor=predictor,
            model=model,
            input_shape=input_shape,
            policies=spec.policies,
            seed=spec.seed,
            max_ratio=spec.max_ratio,
            rounds=spec.rounds,
            repeats=spec.repeats,
            latency=config,
            progress=update,
        )
    if spec.plot:
        plot = Path(spec.plot)
    else:  # beside the check's JSON when there is one, else beside the table
        plot = Path(spec.out).with_suffix(".png") if spec.out else path.with_name(f"{path.stem}-check.png")
    plot_check(
        check,
        plot,
        title=f"{table.model['name']}: {spec.policies} random policies, "
        f"{dev['provider'].replace('ExecutionProvider', '')} {dev['threads']}t",
    )
    summary = {**check.summary(), "table": str(path), "plot": str(plot)}
    if spec.out:
        write_json(Path(spec.out), {**summary, **check.to_dict()})
    if args.json:
        print_json(summary)
        return 0
    s = check.summary()
    t = Table(
        title=f"latency table check: {spec.policies} random policies of {table.model['name']} "
        f"({check.rounds} interleaved rounds × {check.runs_per_round} runs)"
    )
    t.add_column("metric")
    for clock in s["metrics"]:
        label = "thread CPU time" if clock == "cpu" else "wall clock"
        t.add_column(f"{label}{' (predicted)' if clock == check.clock else ''}", justify="right")
    rows = [
        ("latency-ratio MAPE % (what a budget uses)", "ratio_mape_pct", "{:.2f}"),
        ("latency-ratio max error %", "ratio_max_error_pct", "{:.1f}"),
        ("MAPE % (ms)", "mape_pct", "{:.2f}"),
        ("Spearman", "spearman", "{:.3f}"),
        ("Pearson", "pearson", "{:.3f}"),
        ("max error ms", "max_abs_error_ms", "{:.3f}"),
        ("max error %", "max_error_pct", "{:.1f}"),
        ("mean signed error %", "bias_pct", "{:+.2f}"),
        ("measured min ms", "measured_min_ms", "{:.3f}"),
        ("measured max ms", "measured_max_ms", "{:.3f}"),
        ("noise: CV of per-round medians %", "noise_pct", "{:.2f}"),
        ("split-half Spearman of measurement", "split_half_spearman", "{:.3f}"),
        ("unpruned: measured now ms", "unpruned_measured_ms", "{:.3f}"),
        ("unpruned: predicted ms", "unpruned_predicted_ms", "{:.3f}"),
        ("machine drift since build %", "drift_since_build_pct", "{:+.1f}"),
        ("MAPE after drift correction %", "mape_drift_corrected_pct", "{:.2f}"),
    ]
    for label, key, fmt in rows:
        t.add_row(label, *(fmt.format(m[key]) for m in s["metrics"].values()))
    stdout.print(t)
    m = Table(title=f"prediction modes against {check.clock} clock (default: {check.mode})")
    for col in (
        "mode",
        "ratio MAPE %",
        "MAPE %",
        "Spearman",
        "mean signed error %",
        "MAPE after drift correction %",
        "unpruned predicted ms",
    ):
        m.add_column(col, justify="right")
    for md, v in s["modes"].items():
        m.add_row(
            md,
            f"{v['ratio_mape_pct']:.2f}",
            f"{v['mape_pct']:.2f}",
            f"{v['spearman']:.3f}",
            f"{v['bias_pct']:+.2f}",
            f"{v['mape_drift_corrected_pct']:.2f}",
            f"{v['unpruned_predicted_ms']:.3f}",
        )
    stdout.print(m)
    secs = s["seconds"]
    stdout.print(
        f"time {secs['total']:.1f} s (prune+export {secs['prune+export']:.1f} s, measure "
        f"{secs['measure']:.1f} s); plot {plot}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "latency",
        example="prunegym latency build --model smallcnn --data digits --grid-step 8 --out table.json",
    )
    lsub = p.add_subparsers(dest="latency_command", metavar="ACTION")
    b = add_command(
        lsub,
        "build",
        help="profile every layer shape the search can produce on this device",
        example="prunegym latency build --model resnet56 --weights "
        "../shared/data/pretrained/resnet56-4bfd9763.th --data cifar10:../shared/data/cifar-10-batches-py "
        "--max-ratio 0.8 --provider cpu --threads 1 --out bench/results/latency/resnet56-cpu-1t.json",
    )
    add_config_flags(b, LatencyBuildSpec)
    b.add_argument("--json", action="store_true", help="print the summary as JSON")
    b.set_defaults(func=cmd_build)
    c = add_command(
        lsub,
        "check",
        help="compare predicted with measured latency on random policies",
        example="prunegym latency check --latency-table bench/results/latency/resnet56-cpu-1t.json "
        "--policies 50 --seed 1",
    )
    add_config_flags(c, LatencyCheckSpec)
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.set_defaults(func=cmd_check)
    p.set_defaults(func=lambda a: p.print_help() or 2)
