"""``prunegym compress``: the Deep Compression pipeline (Han et al. 2016) as resumable steps.

1. **prune** — ``prune_steps`` steps of the AGP schedule (:func:`~prunegym.workflow.fine_grained.agp_sparsity`):
   each zeroes the smallest-magnitude weights up to its sparsity (global or per-layer threshold) and finetunes
   ``epochs_per_step`` epochs with the masks kept (:class:`~prunegym.workflow.fine_grained.MaskKeeper`); it keeps
   one checkpoint, ``pruned_K.pt`` (the finetune's last.pt/best.pt are removed once the step is done).
2. **share** — k-means per layer (:func:`~prunegym.workflow.weight_sharing.share_weights`), centroid finetuning,
   then the ``.dc`` file (:mod:`prunegym.core.dc_format`), read back, compared tensor by tensor with the model it
   was written from, and evaluated.

Every step records a settings stamp (:class:`~prunegym.core.stamps.StepStamps`): a rerun skips fresh steps and
redoes a step whose settings (or an earlier step) changed. ``report.json``/``report.md`` hold, per stage, test
top-1/top-5 and the stored size (dense FP32 → pruned CSR FP32 → shared → Huffman file) with the compression rate.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunegym.core.checkpoint import load_model, save_model
from prunegym.core.data import DataSplits
from prunegym.core.dc_format import SharedLayer, relative_indices, stored_order, write_dc
from prunegym.core.evaluate import evaluate, input_norm
from prunegym.core.io import atomic_write_text, write_json
from prunegym.core.models import model_info
from prunegym.core.run_folder import BEST_CHECKPOINT, LAST_CHECKPOINT
from prunegym.core.stamps import StepStamps, file_digest, stamp_of
from prunegym.core.train import train
from prunegym.core.train_config import TrainConfig, teacher_precision_stamp
from prunegym.workflow.compress_config import CompressConfig
from prunegym.workflow.fine_grained import (
    MaskKeeper,
    agp_sparsity,
    apply_masks,
    magnitude_masks,
    prunable_weights,
    sparsity_of,
)
from prunegym.workflow.weight_sharing import finetune_centroids, share_weights

__all__ = ["DC_FILE", "compress", "storage_sizes"]

log = logging.getLogger(__name__)

DC_FILE = "model.dc"
RESULTS_FILE = "stages.json"
ProgressFn = Callable[[str, int, int, dict[str, float]], None]


def storage_sizes(state_dict: dict[str, torch.Tensor], *, layers: dict[str, tuple[int, int, str]]) -> dict[str, float]:
    """Stored bytes of ``state_dict`` at each stage, by the paper's accounting.

    Args:
        state_dict: the model's tensors (its shared layers already pruned).
        layers: name → ``(bits, index_bits, order)`` of each sparse/shared weight; other tensors are stored raw.

    Returns:
        ``dense`` (every tensor as stored now), ``pruned`` (sparse entries as FP32 value + relative index, fillers
        included), ``shared`` (entries as cluster index + relative index, plus FP32 codebooks), in bytes.
    """
    dense = sum(t.numel() * t.element_size() for t in state_dict.values())
    raw = sum(t.numel() * t.element_size() for n, t in state_dict.items() if n not in layers)
    pruned_bits = shared_bits = 0
    for name, (bits, index_bits, order) in layers.items():
        entries = len(relative_indices(stored_order(state_dict[name], order), 2**index_bits - 1)[0])
        pruned_bits += entries * (32 + index_bits)
        shared_bits += entries * (bits + index_bits) + 32 * 2**bits
    return {"dense": float(dense), "pruned": raw + pruned_bits / 8, "shared": raw + shared_bits / 8}


def _test(model: nn.Module, data: DataSplits, limit: int | None) -> dict[str, float]:
    mean, std = input_norm(model, mean=data.mean, std=data.std)
    r = evaluate(model, data.test_x, data.test_y, mean=mean, std=std, limit=limit)
    return {"top1": r.top1, "top5": r.top5, "n": r.n}


def _finetune(
    cfg: CompressConfig,
    model: nn.Module,
    data: DataSplits,
    folder: Path,
    stamp: str,
    progress: ProgressFn | None,
    teacher: nn.Module | None = None,
) -> None:
    """Finetune ``model`` in ``folder`` with its zeros kept (distilled from ``teacher`` when given); a folder left
    by other settings starts over."""
    mark = folder / "stamp.txt"
    if folder.exists() and (not mark.exists() or mark.read_text(encoding="utf-8").strip() != stamp):
        shutil.rmtree(folder)
    atomic_write_text(mark, stamp + "\n")
    masks = {n: (w.detach() != 0).float() for n, w in prunable_weights(model).items()}
    keeper = MaskKeeper(model, masks)
    try:
        train(
            config=TrainConfig(
                model=cfg.model,
                data=cfg.data,
                out=str(folder),
                epochs=cfg.epochs_per_step,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                lr_schedule=cfg.lr_schedule,
                weight_decay=cfg.weight_decay,
                warmup_epochs=0.0,
                teacher="dense model" if teacher is not None else None,
                kd_alpha=cfg.kd_alpha,
                kd_temperature=cfg.kd_temperature,
                teacher_precision=cfg.teacher_precision,
                val_size=cfg.val_size,
                seed=cfg.seed,
                max_steps_per_epoch=cfg.max_steps_per_epoch,
                eval_test=False,
            ),
            model=model,
            data=data,
            run_dir=folder,
            teacher=teacher,
            after_step=keeper.after_step,
            resume=(folder / LAST_CHECKPOINT).exists(),
            progress=progress,
        )
    finally:
        keeper.remove()
    for name in (LAST_CHECKPOINT, BEST_CHECKPOINT):  # the step keeps one checkpoint: pruned_K.pt
        (folder / name).unlink(missing_ok=True)


def _share(
    cfg: CompressConfig, model: nn.Module, data: DataSplits, out: Path, results: dict, progress: ProgressFn | None
) -> None:
    """k-means, centroid finetune, the .dc file, read back bit-exactly and evaluated (into ``results``)."""
    weights = prunable_weights(model)
    bits = {n: (cfg.linear_bits or cfg.bits) if w.ndim == 2 else cfg.bits for n, w in weights.items()}
    shared = share_weights(model, names=bits, init=cfg.init, seed=cfg.seed)
    results["shared"] = _test(model, data, cfg.eval_limit)

    def on_step(done: int, total: int, loss: float) -> None:
        if progress is not None:
            progress("centroid finetune", done, total, {"loss": loss, "lr": cfg.centroid_lr})

    finetune_centroids(
        model,
        shared,
        data,
        steps=cfg.centroid_steps,
        lr=cfg.centroid_lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        progress=on_step,
    )
    results["centroids"] = _test(model, data, cfg.eval_limit)
    layers = {n: (bits[n], cfg.index_bits, "csc" if weights[n].ndim == 2 else "csr") for n in weights}
    info = model_info(model)
    assert info is not None, "compress needs a model built by build_model"
    meta = {
        "model": info.name,
        "num_classes": info.num_classes,
        "in_channels": info.in_channels,
        "policy": getattr(model, "prunegym_policy", None),
        "input_shape": list(data.input_shape),
    }
    state = model.state_dict()
    write_dc(
        out,
        meta=meta,
        state_dict=state,
        shared={
            n: SharedLayer(codebook=shared[n].codebook.numpy(), bits=b, index_bits=ib, order=o)
            for n, (b, ib, o) in layers.items()
        },
    )
    loaded = load_model(str(out))
    back = loaded.state_dict()
    exact = list(back) == list(state) and all(torch.equal(back[k], v) for k, v in state.items())
    if not exact:  # pragma: no cover - the codec's tests guard this
        raise RuntimeError(f"{out} does not read back the weights it was written from")
    distinct = max(len(torch.unique(w[w != 0])) for w in prunable_weights(loaded).values())
    results["huffman"] = {**_test(loaded, data, cfg.eval_limit), "bit_exact": exact, "max_distinct": distinct}
    results["sizes"] = {**storage_sizes(state, layers=layers), "huffman": float(out.stat().st_size)}
    results["sparsity"] = sparsity_of(loaded)


def _report(cfg: CompressConfig, results: dict[str, Any]) -> dict[str, Any]:
    sizes = results["sizes"]
    dense = sizes["dense"]
    last = f"prune_{cfg.prune_steps}"
    rows = [
        ("dense FP32", results["dense"], dense),
        (f"pruned ({100 * results['sparsity']:.1f}% zeros, CSR FP32)", results[last], sizes["pruned"]),
        (f"shared ({cfg.bits} bits, {cfg.init} init)", results["shared"], sizes["shared"]),
        ("shared + centroid finetune", results["centroids"], sizes["shared"]),
        ("Huffman .dc file (loaded back)", results["huffman"], sizes["huffman"]),
    ]
    stages = [
        {"stage": name, "top1": r["top1"], "top5": r["top5"], "bytes": b, "ratio": dense / b} for name, r, b in rows
    ]
    return {
        "model": cfg.model,
        "sparsity_target": cfg.sparsity,
        "sparsity": results["sparsity"],
        "bits": cfg.bits,
        "linear_bits": cfg.linear_bits or cfg.bits,
        "index_bits": cfg.index_bits,
        "test_images": results["dense"]["n"],
        "compression": dense / sizes["huffman"],
        "top1_lost": results["dense"]["top1"] - results["huffman"]["top1"],
        "bit_exact": results["huffman"]["bit_exact"],
        "max_distinct_values_per_layer": results["huffman"]["max_distinct"],
        "steps": {k: v for k, v in results.items() if k.startswith("prune_")},
        "stages": stages,
    }


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (``report.md``)."""
    lines = [
        f"### Deep Compression of {report['model']}",
        "",
        f"{100 * report['sparsity']:.1f}% of the Conv/Linear weights zero, {report['bits']}-bit sharing, "
        f"{report['index_bits']}-bit relative indices; test top-1 on {report['test_images']} images.",
        "",
        "| stage | top-1 | top-5 | stored bytes | compression |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in report["stages"]:
        lines.append(f"| {s['stage']} | {s['top1']:.2f}% | {s['top5']:.2f}% | {s['bytes']:,.0f} | {s['ratio']:.1f}× |")
    return "\n".join(lines) + "\n"


def compress(
    *,
    config: CompressConfig,
    model: nn.Module,
    data: DataSplits,
    run_dir: Path,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run (or resume) the pipeline of the module docstring in ``run_dir``; returns the report.

    Args:
        config: the options.
        model: the trained dense model (modified in place).
        data: the dataset.
        run_dir: the run folder.
        progress: ``progress(phase, done, total, metrics)`` during finetunes.

    Returns:
        The report (also written as ``report.json`` and ``report.md``).
    """
    cfg, run_dir = config, Path(run_dir)
    stamps = StepStamps(run_dir, label="compress step")
    results_path = run_dir / RESULTS_FILE
    results: dict[str, Any] = json.loads(results_path.read_text(encoding="utf-8")) if results_path.exists() else {}
    base = {
        "model": file_digest(cfg.model),
        "weights": file_digest(cfg.weights),
        "data": cfg.data,
        "val_size": cfg.val_size,
        "seed": cfg.seed,
        "eval_limit": cfg.eval_limit,
    }
    prev = stamp_of(base)
    if results.get("base") != prev or "dense" not in results:
        results = {"base": prev, "dense": _test(model, data, cfg.eval_limit)}
        write_json(results_path, results)
    teacher = copy.deepcopy(model).eval() if cfg.distill else None  # the dense model, before any mask
    kd = {f: getattr(cfg, f) for f in ("distill", "kd_alpha", "kd_temperature")} if cfg.distill else {}
    if cfg.distill:
        kd.update(teacher_precision_stamp(cfg.teacher_precision))
    current = model
    for k in range(1, cfg.prune_steps + 1):
        target = agp_sparsity(k, steps=cfg.prune_steps, final=cfg.sparsity)
        settings = {
            "after": prev,
            "sparsity": round(target, 9),
            **{f: getattr(cfg, f) for f in ("scope", "epochs_per_step", "lr", "lr_schedule", "weight_decay")},
            **{f: getattr(cfg, f) for f in ("batch_size", "max_steps_per_epoch")},
            **kd,  # absent without distillation, so the runs made before it existed stay fresh
        }
        out = run_dir / f"pruned_{k}.pt"
        if stamps.fresh(f"prune_{k}", settings, [out]) and f"prune_{k}" in results:
            current = load_model(str(out))
            log.info("pruning step %d already done (%s)", k, out)
        else:
            apply_masks(current, magnitude_masks(prunable_weights(current), sparsity=target, scope=cfg.scope))
            log.info("pruning step %d/%d: %.1f%% of the weights zero", k, cfg.prune_steps, 100 * sparsity_of(current))
            if cfg.epochs_per_step:
                _finetune(cfg, current, data, run_dir / f"prune_{k}", stamp_of(settings), progress, teacher)
            results[f"prune_{k}"] = {
                "target": target,
                "sparsity": sparsity_of(current),
                **_test(current, data, cfg.eval_limit),
            }
            save_model(out, model=current, extra={"input_shape": list(data.input_shape)})
            write_json(results_path, results)
            stamps.record(f"prune_{k}", settings)
        prev = stamp_of(settings)
    settings = {
        "after": prev,
        **{f: getattr(cfg, f) for f in ("bits", "linear_bits", "index_bits", "init", "centroid_steps")},
        **{f: getattr(cfg, f) for f in ("centroid_lr", "batch_size")},
    }
    dc = run_dir / DC_FILE
    if not (stamps.fresh("share", settings, [dc]) and "sizes" in results):
        _share(cfg, current, data, dc, results, progress)
        write_json(results_path, results)
        stamps.record("share", settings)
    report = _report(cfg, results)
    write_json(run_dir / "report.json", report)
    atomic_write_text(run_dir / "report.md", report_markdown(report))
    return report
