"""Replay a searched policy into a deployable model.

Steps, each resumable and runnable alone (``prunegym replay STEP``). A step is skipped only when its outputs
exist *and* were made from the same settings and inputs (:mod:`prunegym.core.stamps`, ``steps.json``): rerun
with other finetune settings and the finetune restarts (the old one is kept as ``finetune.previous``), and every
step after it is redone, the bundle included.

1. ``prune``     apply the policy to the full model (channels selected by the policy's criterion) → pruned.pt
2. ``finetune``  full finetune (cosine LR, distillation from the unpruned model, best epoch by val accuracy;
                 the last epoch with val_size 0, which trains on every training image)
3. ``transform`` the dense smaller model → model.pt. prunegym's pruner removes channels physically from the
                 start, so this step rebuilds the finetuned model from base architecture + policy + state_dict
                 (the way users load it) and checks it against the finetuned one (max abs output difference).
4. ``export``    ONNX (opset 17, dynamic batch) of the pruned model and of the unpruned baseline
5. ``quantize``  INT8 static quantization with ONNX Runtime (pre-processing, QDQ, per-channel, calibration)
6. ``verify``    top-1/top-5 of every ONNX model with ONNX Runtime alone on the test split, and agreement
                 with the PyTorch model
7. ``bench``     latency (median, p90) at batch 1 and throughput at a larger batch for each thread count,
                 baseline vs pruned vs pruned+INT8, interleaved in one run
8. ``bundle``    the folder a user ships, with report.json / report.md and plots
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from prunegym.core.checkpoint import load_model, read_checkpoint, save_model
from prunegym.core.data import DataSplits, iterate_batches, load_data, normalize
from prunegym.core.errors import UserError
from prunegym.core.evaluate import check_model_fits_data, evaluate, input_norm
from prunegym.core.io import read_jsonl, write_json
from prunegym.core.onnxrt.runtime import RUNTIME_LABELS
from prunegym.core.policy import Policy
from prunegym.core.pruning import apply_policy
from prunegym.core.run_folder import (
    BEST_CHECKPOINT,
    BEST_POLICY_FILE,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    METRICS_FILE,
    MODEL_FILE,
    read_run_config,
    write_run_config,
)
from prunegym.core.stamps import StepStamps
from prunegym.core.stats import model_stats
from prunegym.core.train import TrainConfig, train
from prunegym.deploy.bundle import speed_words
from prunegym.deploy.replay_config import STEPS, ReplayConfig
from prunegym.deploy.replay_stamps import clean_leftovers, step_settings

log = logging.getLogger(__name__)


@dataclass
class Replay:
    """Resolved inputs of a replay and the folder it writes."""

    config: ReplayConfig
    out: Path
    policy: Policy
    model: str
    weights: str | None
    data: DataSplits
    base: torch.nn.Module
    progress: Callable[[str, int, int, dict[str, float]], None] | None = None  # finetune steps, for a CLI bar
    stamps: StepStamps | None = None
    _settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return input_norm(self.base, mean=self.data.mean, std=self.data.std)

    def settings(self, step: str) -> dict[str, Any]:
        """What ``step``'s outputs depend on: its own options and the stamps of the steps it reads."""
        if step not in self._settings:
            self._settings[step] = step_settings(self, step)
        return self._settings[step]

    def fresh(self, step: str, *outputs: Path) -> bool:
        """Whether ``step``'s outputs exist and were made from its current settings."""
        return self.stamps is not None and self.stamps.fresh(step, self.settings(step), outputs)

    def done(self, step: str) -> None:
        """Record that ``step``'s outputs were just made from its current settings."""
        if self.stamps is not None:
            self.stamps.record(step, self.settings(step))


def resolve(config: ReplayConfig) -> Replay:
    """Find policy, model, weights and data from ``--run`` and/or explicit options (explicit options win)."""
    run_cfg: dict[str, Any] = {}
    policy_path = config.policy
    if config.run:
        run = Path(config.run)
        if not (run / CONFIG_FILE).exists():
            raise UserError(
                f"{run} is not a search run folder (no config.yaml); pass --policy, --model, --data instead"
            )
        run_cfg = read_run_config(run)
        if policy_path is None:
            policy_path = str(run / BEST_POLICY_FILE)
    if policy_path is None:
        raise UserError("nothing to replay: pass --run RUN (a search run) or --policy POLICY.yaml")
    if not Path(policy_path).exists():
        raise UserError(f"policy file {policy_path} not found; run a search first or pass --policy")
    policy = Policy.load(policy_path)
    model = config.model or run_cfg.get("model") or policy.model
    weights = config.weights or run_cfg.get("weights")
    data_spec = config.data or run_cfg.get("data")
    if not model or not data_spec:
        raise UserError("cannot tell the model or data of this policy; pass --model and --data")
    data = load_data(data_spec, val_size=config.val_size, seed=config.seed)
    base = load_model(model, weights=weights, num_classes=data.num_classes, in_channels=data.in_channels).eval()
    check_model_fits_data(base, input_shape=data.input_shape, num_classes=data.num_classes, data_name=data_spec)
    out = Path(config.out) if config.out else (Path(config.run) / "replay" if config.run else Path("runs/replay"))
    return Replay(config=config, out=out, policy=policy, model=model, weights=weights, data=data, base=base)


# ------------------------------------------------------------------------------------------------- steps


def step_prune(r: Replay) -> Path:
    path = r.out / "pruned.pt"
    if r.fresh("prune", path):
        return path
    criterion = r.config.criterion or r.policy.criterion
    mean, std = r.mean_std
    calib = None
    if criterion in {"taylor", "lsq"}:
        g = torch.Generator().manual_seed(r.config.seed)
        calib = list(
            iterate_batches(
                r.data.train_x, r.data.train_y, batch_size=64, mean=mean, std=std, shuffle=True, generator=g, limit=256
            )
        )
    pruned = apply_policy(r.base, r.policy, input_shape=r.data.input_shape, criterion=criterion, calib=calib)
    save_model(path, model=pruned, policy=pruned.prunegym_policy)
    r.done("prune")
    log.info("pruned with %s: %s", criterion, path)
    return path


def step_finetune(r: Replay) -> Path:
    run_dir = r.out / "finetune"
    best = run_dir / BEST_CHECKPOINT
    pruned_path = step_prune(r)
    if run_dir.exists() and not r.fresh("finetune", run_dir):  # another schedule or model: start over
        previous = r.out / "finetune.previous"
        shutil.rmtree(previous, ignore_errors=True)
        run_dir.rename(previous)
        log.warning("the finetune restarts from epoch 1; the previous one is kept in %s", previous)
    last = read_checkpoint(run_dir / LAST_CHECKPOINT) if (run_dir / LAST_CHECKPOINT).exists() else None
    if best.exists() and last is not None and int(last["epoch"]) + 1 >= r.config.epochs:
        return best
    run_dir.mkdir(parents=True, exist_ok=True)
    r.done("finetune")  # the folder is being made from these settings (a kill resumes it)
    model = load_model(str(pruned_path))
    c = r.config
    cfg = TrainConfig(
        model=str(pruned_path),
        data=r.data.spec,
        out=str(run_dir),
        epochs=c.epochs,
        lr=c.lr,
        batch_size=c.batch_size,
        weight_decay=c.weight_decay,
        warmup_epochs=c.warmup_epochs,
        label_smoothing=c.label_smoothing,
        teacher=r.model if c.distill else None,
        teacher_weights=r.weights if c.distill else None,
        kd_alpha=c.kd_alpha,
        kd_temperature=c.kd_temperature,
        teacher_precision=c.teacher_precision,
        seed=c.seed,
        max_steps_per_epoch=c.max_steps_per_epoch,
        eval_test=False,
        device=c.device,
        channels_last=c.channels_last,
        compile=c.compile,
    )
    policy = read_checkpoint(pruned_path)["policy"]
    train(
        config=cfg,
        model=model,
        data=r.data,
        run_dir=run_dir,
        teacher=r.base if c.distill else None,
        policy=policy,
        resume=last is not None,
        progress=r.progress,
    )
    return best


def step_transform(r: Replay) -> Path:
    path = r.out / MODEL_FILE
    if r.fresh("transform", path):
        return path
    best = step_finetune(r)
    ckpt = read_checkpoint(best)
    finetuned = load_model(str(best)).eval()
    save_model(path, model=finetuned, policy=ckpt["policy"], extra={"input_shape": list(r.data.input_shape)})
    rebuilt = load_model(str(path)).eval()
    x = torch.randn(8, *r.data.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((finetuned(x) - rebuilt(x)).abs().max())
    if diff > 1e-5:
        raise RuntimeError(f"rebuilt model differs from the finetuned one by {diff:.3g}")
    log.info("dense model %s rebuilt from policy + state_dict (max abs diff %.2g)", path, diff)
    r.done("transform")
    return path


def step_export(r: Replay) -> dict[str, Path]:
    from prunegym.core.onnx_export import export_onnx

    paths = {"baseline": r.out / "onnx" / "baseline.onnx", "pruned": r.out / "onnx" / "model.onnx"}
    if r.fresh("export", *paths.values()):
        return paths
    export_onnx(r.base, paths["baseline"], input_shape=r.data.input_shape, opset=17, dynamic_batch=True)
    model = load_model(str(step_transform(r))).eval()
    export_onnx(model, paths["pruned"], input_shape=r.data.input_shape, opset=17, dynamic_batch=True)
    r.done("export")
    return paths


def calibration_images(r: Replay) -> np.ndarray:
    """``calib_images`` training images (seeded), normalized as the model expects, float32 N×C×H×W."""
    mean, std = r.mean_std
    g = torch.Generator().manual_seed(r.config.seed + 7)
    idx = torch.randperm(len(r.data.train_x), generator=g)[: r.config.calib_images]
    return normalize(r.data.train_x[idx].float() / 255.0, mean=mean, std=std).numpy().astype(np.float32)


def step_quantize(r: Replay) -> Path:
    from prunegym.deploy.quantize import quantize_int8

    path = r.out / "onnx" / "model.int8.onnx"
    if r.fresh("quantize", path):
        return path
    fp32 = step_export(r)["pruned"]
    result = quantize_int8(
        fp32,
        path,
        calibration=calibration_images(r),
        method=r.config.calib_method,
        per_channel=r.config.per_channel,
        reduce_range=r.config.reduce_range,
    )
    write_json(r.out / "onnx" / "quantize.json", result.to_dict())
    r.done("quantize")
    return path


def step_verify(r: Replay) -> dict[str, Any]:
    from prunegym.core.onnxrt import runtime_version
    from prunegym.deploy.runtime import agreement, evaluate_onnx

    path = r.out / "verify.json"
    if r.fresh("verify", path):
        return yaml.safe_load(path.read_text())
    onnx = {**step_export(r), "pruned+int8": step_quantize(r)}
    mean, std = r.mean_std
    n = len(r.data.test_x) if r.config.test_limit is None else min(r.config.test_limit, len(r.data.test_x))
    x, y = r.data.test_x[:n], r.data.test_y[:n]
    model = load_model(str(step_transform(r))).eval()
    torch_res = evaluate(model, x, y, mean=mean, std=std)
    base_res = evaluate(r.base, x, y, mean=mean, std=std)
    with torch.no_grad():
        logits = torch.cat([model(xb) for xb, _ in iterate_batches(x, y, batch_size=500, mean=mean, std=std)])
    xs, ys = x.numpy(), y.numpy()
    out: dict[str, Any] = {
        "n": n,
        "split": "test",
        "runtime": {"runtime": r.config.runtime, "version": runtime_version(r.config.runtime)},
        "pytorch": {"pruned": torch_res.to_dict(), "baseline": base_res.to_dict()},
    }
    for name, p in onnx.items():
        rt = r.config.runtime
        res = evaluate_onnx(p, xs, ys, mean=mean, std=std, threads=2, runtime=rt)
        agree = (
            agreement(p, logits.numpy(), xs, mean=mean, std=std, threads=2, runtime=rt) if name != "baseline" else None
        )
        out[name] = {**res.to_dict(), "agreement_with_pytorch": None if agree is None else agree.to_dict()}
    write_json(path, out)
    r.done("verify")
    return out


def step_bench(r: Replay) -> dict[str, Any]:
    from prunegym.deploy.benchmark import benchmark_models

    path = r.out / "bench.json"
    if r.fresh("bench", path):
        return yaml.safe_load(path.read_text())
    onnx = {**step_export(r), "pruned+int8": step_quantize(r)}
    report = benchmark_models(
        {k: onnx[k] for k in ("baseline", "pruned", "pruned+int8")},
        input_shape=r.data.input_shape,
        threads=r.config.bench_threads,
        batch_throughput=r.config.bench_batch,
        repeats=r.config.bench_repeats,
        rounds=r.config.bench_rounds,
        runtime=r.config.runtime,
    )
    write_json(path, report.to_dict())
    r.done("bench")
    return report.to_dict()


def build_report(r: Replay) -> dict[str, Any]:
    """report.json: accuracy, weights, operations, size, latency and FPS for baseline, pruned and INT8."""
    verify, bench = step_verify(r), step_bench(r)
    shape = r.data.input_shape
    base_stats = model_stats(r.base, input_shape=shape)
    model = load_model(str(step_transform(r)))
    pruned_stats = model_stats(model, input_shape=shape)
    onnx = {**step_export(r), "pruned+int8": step_quantize(r)}
    t1 = min(r.config.bench_threads)

    def entry(name: str) -> dict[str, Any]:
        return next(e for e in bench["entries"] if e["model"] == name and e["threads"] == t1)

    variants = {}
    for name, stats in (("baseline", base_stats), ("pruned", pruned_stats), ("pruned+int8", pruned_stats)):
        e = entry(name)
        variants[name] = {
            "top1": verify[name]["top1"],
            "top5": verify[name]["top5"],
            "params": stats.params,
            "macs": stats.macs,
            "size_mb": round(onnx[name].stat().st_size / 1e6, 3),
            "latency_ms": e["latency_median_ms"],
            "latency_p90_ms": e["latency_p90_ms"],
            "fps": e["throughput_fps"],
            "speedup": e["speedup"],
            "mac_reduction": base_stats.macs / stats.macs,
            "realization": e["speedup"] / (base_stats.macs / stats.macs),
        }
    verify_runtime = (verify.get("runtime") or {}).get("runtime", "ort")  # older verify.json: ONNX Runtime
    finetune = read_jsonl(r.out / "finetune" / METRICS_FILE)
    quantize_json = r.out / "onnx" / "quantize.json"
    quantization = yaml.safe_load(quantize_json.read_text()) if quantize_json.exists() else None
    return {
        "title": f"prunegym replay: {r.model} on {r.data.spec.split(':')[0]}",
        "model": r.model,
        "dataset": r.data.spec,
        "policy": r.policy.to_dict(),
        "variants": variants,
        "pytorch": verify["pytorch"],
        "agreement_with_pytorch": {k: verify[k]["agreement_with_pytorch"] for k in ("pruned", "pruned+int8")},
        "latency": {
            "provider": bench["provider"],
            "threads": t1,
            "batch": 1,
            "machine": bench["machine"],
            "onnxruntime": bench["onnxruntime"],
            "runtime": r.config.runtime,
            "runtime_version": bench.get("runtimes", {}).get(r.config.runtime, bench["onnxruntime"]),
            "precision": {e["model"]: e.get("precision") for e in bench["entries"] if e["threads"] == t1},
            "interleaved rounds": bench["rounds"],
        },
        "benchmark": bench,
        "quantization": quantization,
        "finetune": {
            "epochs": len(finetune),
            "seconds": finetune[-1]["seconds"] if finetune else None,
            "best_val_top1": max((m["val_top1"] for m in finetune if "val_top1" in m), default=None),
            "kept": "the best val epoch" if r.data.val_x.numel() else "the last epoch (no val split: val_size 0)",
        },
        "notes": [
            f"Accuracy measured by {RUNTIME_LABELS.get(verify_runtime, verify_runtime)} on {verify['n']}"
            f" {verify['split']} images; PyTorch top-1 of the pruned"
            f" model {verify['pytorch']['pruned']['top1']:.2f}% (the estimate), ONNX FP32"
            f" {verify['pruned']['top1']:.2f}%, INT8 {verify['pruned+int8']['top1']:.2f}% (on-device numbers).",
            f"MACs: {base_stats.macs / pruned_stats.macs:.2f}× fewer; latency {speed_words(variants['pruned']['speedup'])}"
            f" (FP32) and {speed_words(variants['pruned+int8']['speedup'])} (INT8) than the unpruned FP32 model;"
            f" realization (speed-up ÷ MAC reduction) {variants['pruned']['realization']:.2f} FP32,"
            f" {variants['pruned+int8']['realization']:.2f} INT8.",
        ],
    }


def step_bundle(r: Replay) -> Path:
    from prunegym.deploy.bundle import write_bundle
    from prunegym.deploy.plots import plot_bench, plot_channels

    bundle = r.out / "bundle"
    if r.fresh("bundle", bundle):
        return bundle
    report = build_report(r)
    onnx = {**step_export(r), "pruned+int8": step_quantize(r)}
    mean, std = r.mean_std
    pre = {
        "channels": r.data.in_channels,
        "input_size": list(r.data.input_shape[1:]),
        "mean": list(mean),
        "std": list(std),
    }
    plots = r.out / "plots"  # drawn first, so that the bundle is complete the moment it appears
    plots.mkdir(exist_ok=True)
    plot_bench(report["benchmark"], plots / "latency_fps_vs_threads.png")
    model = load_model(str(step_transform(r)))
    plot_channels(base=r.base, pruned=model, input_shape=r.data.input_shape, out=plots / "channels.png")
    write_bundle(
        bundle,
        fp32_onnx=onnx["pruned"],
        int8_onnx=onnx["pruned+int8"],
        preprocessing=pre,
        labels=list(r.data.class_names),
        report=report,
        extras={f"plots/{f.name}": f for f in sorted(plots.glob("*.png"))},
        overwrite=True,  # a stale bundle of this replay is replaced in one swap
    )
    r.done("bundle")
    return bundle


STEP_FUNCS = {
    "prune": step_prune,
    "finetune": step_finetune,
    "transform": step_transform,
    "export": step_export,
    "quantize": step_quantize,
    "verify": step_verify,
    "bench": step_bench,
    "bundle": step_bundle,
}


def run_replay(
    config: ReplayConfig,
    *,
    steps: tuple[str, ...] = STEPS,
    progress: Callable[[str, int, int, dict[str, float]], None] | None = None,
) -> tuple[Replay, dict[str, Any]]:
    """Run ``steps`` (each pulls in the steps it needs; finished ones whose settings and inputs did not change
    are skipped).

    ``progress(phase, done, total, metrics)`` follows the finetune, the one long step.
    """
    unknown = [s for s in steps if s not in STEP_FUNCS]
    if unknown:
        raise UserError(f"unknown replay step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    r = resolve(config)
    r.progress = progress
    r.out.mkdir(parents=True, exist_ok=True)
    clean_leftovers(r.out)
    r.stamps = StepStamps(r.out)
    write_run_config(r.out, command="replay", config=config)
    results = {s: STEP_FUNCS[s](r) for s in steps}
    return r, results
