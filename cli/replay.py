"""``prunegym replay [STEP]``: a policy becomes a deployable bundle (finetune, transform, ONNX, INT8, bench)."""

from __future__ import annotations

import argparse
import json
import logging

from prunegym.cli.util import add_command, add_config_flags, config_from_args, progress_bar, stdout
from prunegym.core.device import DEVICE_HELP
from prunegym.deploy.replay_config import STEPS, ReplayConfig

log = logging.getLogger(__name__)


def cmd_replay(args: argparse.Namespace) -> int:
    from prunegym.deploy.replay import run_replay

    cfg = config_from_args(ReplayConfig, args)
    steps = STEPS if args.step == "all" else (args.step,)
    with progress_bar() as bar:
        task = bar.add_task("replay", total=None, info="")

        def on_step(phase: str, done: int, total: int, metrics: dict[str, float]) -> None:
            bar.update(
                task, description=f"finetune {phase}", completed=done, total=total, info=f"loss {metrics['loss']:.3f}"
            )

        _, results = run_replay(cfg, steps=steps, progress=on_step)
    if "bundle" in results:
        report = json.loads((results["bundle"] / "report.json").read_text())
        stdout.print((results["bundle"] / "report.md").read_text())
        stdout.print(
            f"bundle: {results['bundle']}  ({report['variants']['pruned']['speedup']:.2f}× FP32, "
            f"{report['variants']['pruned+int8']['speedup']:.2f}× INT8 vs the unpruned model)"
        )
    else:
        for step, res in results.items():
            stdout.print(f"{step}: {res}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "replay",
        example="prunegym replay --run runs/amc-r56 --epochs 30",
    )
    p.add_argument("step", nargs="?", default="all", choices=("all", *STEPS), help="run one step (and what it needs)")
    add_config_flags(p, ReplayConfig, help={"device": f"where the finetune runs: {DEVICE_HELP}"})
    p.set_defaults(func=cmd_replay)
