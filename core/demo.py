"""``prunegym demo``: the pipeline on the embedded default (scikit-learn's digits), no downloads, no flags.

Like the CLI itself, this is an orchestration layer: it is the one place in ``core`` that reaches up into the
other subsystems, lazily, so the data flow of the library (core ← env ← agents/search → deploy) stays one-way.
Each stage is skipped when its output already exists in the run folder, so an interrupted demo resumes.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from prunegym.core.checkpoint import load_model
from prunegym.core.cli_util import add_command, stdout
from prunegym.core.data import load_data
from prunegym.core.evaluate import evaluate, input_norm
from prunegym.core.models import build_model
from prunegym.core.stats import model_stats
from prunegym.core.train import TrainConfig, train

log = logging.getLogger(__name__)

DEMO_DATA = "digits"
DEMO_MODEL = "smallcnn"


def train_baseline(run_dir: Path, *, epochs: int = 30, seed: int = 0) -> Path:
    """Train the demo's baseline (small CNN on digits) unless ``run_dir/baseline/best.pt`` exists."""
    out = run_dir / "baseline"
    best = out / "best.pt"
    if best.exists():
        log.info("baseline already trained: %s", best)
        return best
    data = load_data(DEMO_DATA, seed=seed)
    cfg = TrainConfig(
        model=DEMO_MODEL,
        data=DEMO_DATA,
        out=str(out),
        epochs=epochs,
        batch_size=64,
        lr=0.05,
        warmup_epochs=1.0,
        seed=seed,
    )
    import torch

    torch.manual_seed(seed)
    model = build_model(DEMO_MODEL, num_classes=data.num_classes, in_channels=data.in_channels)
    train(config=cfg, model=model, data=data, run_dir=out, resume=(out / "last.pt").exists())
    return best


def cmd_demo(args: argparse.Namespace) -> int:
    run_dir = Path(args.out)
    best = train_baseline(run_dir, epochs=args.epochs)
    data = load_data(DEMO_DATA)
    model = load_model(str(best))
    mean, std = input_norm(model, mean=data.mean, std=data.std)
    stats = model_stats(model, input_shape=data.input_shape)
    test = evaluate(model, data.test_x, data.test_y, mean=mean, std=std)
    stdout.print(
        f"baseline {DEMO_MODEL} on {DEMO_DATA}: test top-1 {test.top1:.2f}%, "
        f"{stats.macs:,} MACs, {stats.params:,} params → {best}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "demo",
        help="the whole pipeline on the embedded default (digits): no downloads, no flags",
        example="prunegym demo",
    )
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--epochs", type=int, default=30, help="baseline training epochs")
    p.set_defaults(func=cmd_demo)
