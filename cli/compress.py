"""``prunegym compress``: Deep Compression (fine-grained AGP pruning, weight sharing, Huffman-coded ``.dc`` file)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rich.table import Table

from prunegym.cli.util import add_command, add_config_flags, config_from_args, print_json, progress_bar, stdout
from prunegym.core.run_folder import prepare_run_dir, refuse_existing_run
from prunegym.workflow.compress_config import CompressConfig

log = logging.getLogger(__name__)

R20 = (
    "--model resnet20 --weights ../shared/data/pretrained/resnet20-12fca82f.th "
    "--data cifar10:../shared/data/cifar-10-batches-py"
)


def cmd_compress(args: argparse.Namespace) -> int:
    from prunegym.cli.model import load_model_and_data
    from prunegym.workflow.compress import DC_FILE, compress

    cfg = config_from_args(CompressConfig, args)
    refuse_existing_run(cfg.out, resume=args.resume)  # before any data is loaded
    net, splits = load_model_and_data(
        model=cfg.model, weights=cfg.weights, data=cfg.data, val_size=cfg.val_size, seed=cfg.seed
    )
    assert splits is not None
    run_dir = prepare_run_dir(cfg.out, config=cfg, resume=args.resume, command="compress")
    with progress_bar() as bar:
        task = bar.add_task("compress", total=None, info="")

        def on_step(phase: str, done: int, total: int, metrics: dict[str, float]) -> None:
            bar.update(task, description=phase, completed=done, total=total, info=f"loss {metrics['loss']:.3f}")

        report = compress(config=cfg, model=net, data=splits, run_dir=run_dir, progress=on_step)
    if args.json:
        print_json(report)
        return 0
    table = Table(title=f"Deep Compression of {cfg.model}: {100 * report['sparsity']:.1f}% zeros, {cfg.bits} bits")
    for col in ("stage", "top-1", "top-5", "stored bytes", "compression"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in report["stages"]:
        table.add_row(s["stage"], f"{s['top1']:.2f}%", f"{s['top5']:.2f}%", f"{s['bytes']:,.0f}", f"{s['ratio']:.1f}×")
    stdout.print(table)
    stdout.print(
        f"{report['compression']:.1f}× smaller, top-1 {-report['top1_lost']:+.2f} pt "
        f"(test, n={report['test_images']}); read back bit-exactly → {Path(run_dir) / DC_FILE}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "compress",
        example=f"prunegym compress {R20} --sparsity 0.85 --bits 4 --out runs/r20-dc",
    )
    add_config_flags(p, CompressConfig)
    p.add_argument("--resume", action="store_true", help="continue the run in --out (skips finished steps)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_compress)


__all__ = ["register"]
