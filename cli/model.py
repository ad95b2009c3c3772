"""Sub-commands of the shared kernel: ``stat``, ``eval``, ``train``, ``finetune``."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from prunegym.cli.util import (
    add_command,
    add_config_flags,
    config_from_args,
    fmt_int,
    nonnegative_int,
    positive_int,
    print_json,
    progress_bar,
    stdout,
)
from prunegym.core.device import DEVICE_HELP
from prunegym.core.errors import UserError
from prunegym.core.run_folder import BEST_CHECKPOINT, LAST_CHECKPOINT, prepare_run_dir, refuse_existing_run
from prunegym.core.train_config import TrainConfig

if TYPE_CHECKING:  # the heavy modules load inside the commands, so that parsing needs no PyTorch
    from torch import nn

    from prunegym.core.data import DataSplits

log = logging.getLogger(__name__)


def load_model_and_data(
    *,
    model: str,
    weights: str | None,
    data: str | None,
    val_size: int | None = None,
    seed: int = 0,
    in_channels: int | None = None,
) -> tuple[nn.Module, DataSplits | None]:
    """The model (zoo name, factory, or saved prunegym model) and, if given, the data it must fit; without data,
    ``in_channels`` (from an explicit input shape) builds a zoo model for that many channels."""
    from prunegym.core.checkpoint import load_model
    from prunegym.core.data import load_data
    from prunegym.core.evaluate import check_model_fits_data

    splits = load_data(data, val_size=val_size, seed=seed) if data else None
    kwargs: dict[str, int] = {"num_classes": splits.num_classes, "in_channels": splits.in_channels} if splits else {}
    if not splits and in_channels is not None:
        kwargs["in_channels"] = in_channels
    net = load_model(model, weights=weights, **kwargs)
    if splits is not None:
        trained_on = _trained_input_shape(model)
        if trained_on is not None and tuple(trained_on) != tuple(splits.input_shape):
            shape = "×".join(map(str, trained_on))
            raise UserError(
                f"{model} was trained on {shape} images but --data {data} gives "
                f"{'×'.join(map(str, splits.input_shape))}; pass the data it was trained on (e.g. a ?size= option)"
            )
        check_model_fits_data(net, input_shape=splits.input_shape, num_classes=splits.num_classes, data_name=data)
    return net, splits


def _trained_input_shape(model: str) -> tuple[int, ...] | None:
    """The input shape a saved model records (training checkpoints and replayed models do), else None."""
    from prunegym.core.checkpoint import read_checkpoint

    if not (Path(model).is_dir() or model.endswith((".pt", ".pth", ".dc"))) or not Path(model).exists():
        return None
    saved = read_checkpoint(model).get("input_shape")
    return tuple(int(v) for v in saved) if isinstance(saved, (list, tuple)) and len(saved) == 3 else None


def resolve_input_shape(model: nn.Module, *, model_arg: str, data: DataSplits | None, explicit: str | None) -> tuple:
    from prunegym.core.checkpoint import read_checkpoint
    from prunegym.core.models import model_info

    if explicit:
        try:
            shape = tuple(int(v) for v in explicit.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or not all(1 <= v <= 8192 for v in shape):
            raise UserError(f"--input-shape {explicit!r} must be C,H,W of positive sizes such as 3,32,32")
        return shape
    if data is not None:
        return data.input_shape
    if Path(model_arg).exists():
        ckpt = read_checkpoint(model_arg)
        saved = ckpt.get("input_shape") or (ckpt.get("policy") or {}).get("input_shape")
        if saved:
            return tuple(saved)
    info = model_info(model)
    if info is not None and info.input_shape is not None:
        return info.input_shape
    raise UserError("cannot tell the input shape of this model; pass --input-shape C,H,W or --data SPEC")


# --------------------------------------------------------------------------------------------- stat


def cmd_stat(args: argparse.Namespace) -> int:
    from prunegym.core.pruning import RemovedBlock
    from prunegym.core.stats import model_stats

    explicit = (
        resolve_input_shape(None, model_arg="", data=None, explicit=args.input_shape) if args.input_shape else None
    )
    net, splits = load_model_and_data(
        model=args.model, weights=args.weights, data=args.data, in_channels=explicit[0] if explicit else None
    )
    shape = resolve_input_shape(net, model_arg=args.model, data=splits, explicit=args.input_shape)
    try:
        stats = model_stats(net, input_shape=shape)
    except RuntimeError as exc:  # the model cannot run on that shape (too small, wrong channels)
        first = str(exc).strip().splitlines()[0][:200]
        raise UserError(
            f"{args.model} cannot run on input {','.join(map(str, shape))}: {first}; check --input-shape"
        ) from exc
    removed = [name for name, m in net.named_modules() if isinstance(m, RemovedBlock)]
    conv = args.convention
    if args.json:
        extra = {"weights": stats.weights(conv), "operations": stats.operations(conv)}
        print_json(
            {"model": args.model, "input_shape": list(shape), "removed_blocks": removed, **stats.to_dict(conv), **extra}
        )
        return 0
    table = Table(title=f"{args.model} — input {tuple(shape)}", caption=stats.to_dict(conv)["convention"])
    for col in ("layer", "type", "in", "out", "output", "MACs", "params"):
        table.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for layer in stats.layers:
        table.add_row(
            layer.name,
            layer.type,
            str(layer.in_channels),
            str(layer.out_channels),
            "×".join(map(str, layer.output_size)),
            fmt_int(layer.macs),
            fmt_int(layer.params),
        )
    table.add_section()
    table.add_row("total", "", "", "", "", fmt_int(stats.macs), fmt_int(stats.params))
    stdout.print(table)
    if conv == "deephi":
        stdout.print(
            f"DeePhi convention: weights {fmt_int(stats.weights(conv))} (all but Linear layers)  "
            f"operations {fmt_int(stats.operations(conv))} (2·MACs + bias adds of the convolutions)"
        )
    else:
        stdout.print(
            f"MACs {fmt_int(stats.macs)}  params {fmt_int(stats.params)}  "
            f"operations (DeePhi: 2·MACs + bias adds) {fmt_int(stats.ops_deephi)}"
        )
    if removed:
        stdout.print(f"residual blocks removed ({len(removed)}): {', '.join(removed)}")
    return 0


# --------------------------------------------------------------------------------------------- eval


def cmd_eval(args: argparse.Namespace) -> int:
    from prunegym.core.evaluate import evaluate, input_norm, recalibrate_bn

    net, splits = load_model_and_data(model=args.model, weights=args.weights, data=args.data)
    assert splits is not None
    x, y = {
        "test": (splits.test_x, splits.test_y),
        "val": (splits.val_x, splits.val_y),
        "train": (splits.train_x, splits.train_y),
    }[args.split]
    mean, std = input_norm(net, mean=splits.mean, std=splits.std)
    if args.bn_recalib:
        recalibrate_bn(net, splits.train_x, mean=mean, std=std, num_images=args.bn_recalib, augment=splits.augment)
    result = evaluate(
        net,
        x,
        y,
        mean=mean,
        std=std,
        batch_size=args.batch_size,
        limit=args.limit,
        progress=not args.json,
        desc=f"eval {args.split}",
    )
    if args.json:
        print_json({"split": args.split, **result.to_dict()})
    else:
        stdout.print(
            f"{args.split}: top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  (n={result.n}, loss {result.loss:.4f})"
        )
    return 0


# --------------------------------------------------------------------------------------------- train / finetune

TRAIN_HELP = {
    "model": "zoo name, package.module:factory or file.py:factory (?key=value for its arguments), or a saved prunegym model (file or run folder)",
    "data": "data spec: cifar10:DIR, cifar100:DIR, mnist:DIR, fashion-mnist:DIR, folder:DIR, digits",
    "out": "run folder (config.yaml, last.pt, best.pt, tb/, metrics.jsonl)",
    "weights": "initial weights (state_dict or checkpoint)",
    "teacher": "model to distill from (zoo name or saved prunegym model)",
    "augment": "none | crop | crop+flip (default: the dataset's)",
    "acc_name": "top1 | top5: the accuracy that selects the best checkpoint",
    "max_steps_per_epoch": "cap steps per epoch (quick runs)",
    "device": DEVICE_HELP,
}


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """``prunegym finetune``: the same loop with finetuning defaults (low LR, short schedule, no warm-up)."""

    epochs: int = 10
    lr: float = 0.01
    warmup_epochs: float = 0.0


def _run_training(args: argparse.Namespace, cls: type[TrainConfig], command: str) -> int:
    from prunegym.core.checkpoint import read_checkpoint
    from prunegym.core.evaluate import check_model_fits_data
    from prunegym.core.train import sync_metrics, train

    cfg = config_from_args(cls, args)
    refuse_existing_run(cfg.out, resume=args.resume)  # before any data is loaded
    last = Path(cfg.out) / LAST_CHECKPOINT
    saved = read_checkpoint(last) if args.resume and last.exists() else None
    if saved is not None and int(saved.get("epoch", -1)) + 1 >= cfg.epochs:
        sync_metrics(Path(cfg.out), saved)
        stdout.print(f"{cfg.out} already trained {cfg.epochs} epochs → {Path(cfg.out) / BEST_CHECKPOINT}")
        return 0
    net, splits = load_model_and_data(
        model=cfg.model, weights=cfg.weights, data=cfg.data, val_size=cfg.val_size, seed=cfg.seed
    )
    assert splits is not None
    teacher = None
    if cfg.teacher:
        teacher, _ = load_model_and_data(model=cfg.teacher, weights=cfg.teacher_weights, data=None)
        check_model_fits_data(
            teacher, input_shape=splits.input_shape, num_classes=splits.num_classes, data_name=cfg.data
        )
    run_dir = prepare_run_dir(cfg.out, config=cfg, resume=args.resume, command=command)
    policy, extra, after_step = None, None, None
    if Path(cfg.model).exists():
        saved = read_checkpoint(cfg.model)
        policy = saved.get("policy")
        if saved.get("mask"):  # a masked ("sparse") model: keep its zeroed channels at zero while finetuning
            from prunegym.core.pruning import mask_keeper

            shape = tuple(saved.get("input_shape") or splits.input_shape)
            extra = {"mask": saved["mask"], "input_shape": list(shape)}
            after_step = mask_keeper(net, saved["mask"], input_shape=shape)
    with progress_bar() as bar:
        task = bar.add_task("train", total=None, info="")

        def on_step(phase: str, done: int, total: int, metrics: dict[str, float]) -> None:
            bar.update(
                task,
                description=phase,
                completed=done,
                total=total,
                info=f"loss {metrics['loss']:.3f} lr {metrics['lr']:.4f}",
            )

        result = train(
            config=cfg,
            model=net,
            data=splits,
            run_dir=run_dir,
            teacher=teacher,
            policy=policy,
            extra=extra,
            after_step=after_step,
            resume=args.resume,
            progress=on_step,
        )
    stdout.print(
        (
            f"best epoch {result.best_epoch + 1}: val top-1 {result.best_val.top1:.2f}%"
            if result.best_val
            else f"last epoch {result.best_epoch + 1} kept (no val split)"
        )
        + (f"; test top-1 {result.test.top1:.2f}% top-5 {result.test.top5:.2f}%" if result.test else "")
        + f"  ({result.seconds:.0f} s) → {run_dir / 'best.pt'}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "stat",
        example="prunegym stat --model resnet56 --json",
    )
    p.add_argument("--model", required=True, help=TRAIN_HELP["model"])
    p.add_argument("--weights", help="weights to load (checked against the model)")
    p.add_argument("--data", help="data spec, to take the input shape and class count from")
    p.add_argument("--input-shape", help="C,H,W (default: the model's or the data's)")
    p.add_argument(
        "--convention",
        choices=("prunegym", "deephi"),
        default="prunegym",
        help="counting convention of the weights/operations totals: prunegym (every parameter; Conv+Linear) or "
        "deephi (the Vitis-AI tutorial's: no Linear layers, BN vectors counted)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (params, macs, layers)")
    p.set_defaults(func=cmd_stat)

    p = add_command(
        sub,
        "eval",
        example="prunegym eval --model resnet56 --weights ../shared/data/pretrained/resnet56-4bfd9763.th "
        "--data cifar10:../shared/data/cifar-10-batches-py --json",
    )
    p.add_argument("--model", required=True, help=TRAIN_HELP["model"])
    p.add_argument("--weights", help="weights to load")
    p.add_argument("--data", required=True, help=TRAIN_HELP["data"])
    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="which split")
    p.add_argument("--batch-size", type=positive_int, default=500, help="images per batch")
    p.add_argument("--limit", type=positive_int, help="evaluate only the first N images")
    p.add_argument(
        "--bn-recalib",
        type=nonnegative_int,
        default=0,
        metavar="N",
        help="re-estimate BatchNorm statistics on N training images first",
    )
    p.add_argument("--json", action="store_true", help="print {top1, top5, n} as JSON")
    p.set_defaults(func=cmd_eval)

    for name, cls, example in (
        (
            "train",
            TrainConfig,
            "prunegym train --model smallcnn --data digits --epochs 20 --out runs/digits-smallcnn",
        ),
        (
            "finetune",
            FinetuneConfig,
            "prunegym finetune --model resnet20 --weights ../shared/data/pretrained/resnet20-12fca82f.th "
            "--data cifar10:../shared/data/cifar-10-batches-py --epochs 1 --out runs/r20-ft",
        ),
    ):
        p = add_command(sub, name, example=example)
        add_config_flags(p, cls, help=TRAIN_HELP)
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
        p.set_defaults(func=lambda a, cls=cls, name=name: _run_training(a, cls, name))


__all__ = ["FinetuneConfig", "load_model_and_data", "register", "resolve_input_shape"]
