"""``prunegym demo``: the whole pipeline on the embedded default, no downloads, no flags, a few minutes.

The default is a CIFAR ResNet-20 on scikit-learn's digits upscaled to 32×32 (``digits?size=32``): big enough
that latency is compute, not per-operator overhead, so pruning can make it faster.

1. train the baseline;
2. profile the predicted-latency table on this device (every layer shape the search can produce, blocks removed);
3. search under a latency budget (keep half the baseline's predicted latency) with the AMC-style DDPG agent,
   over channel widths, the residual stream and whole residual blocks;
4. run an Optuna (TPE) study over the same decisions with the same evaluator, as the baseline to beat;
5. replay the better policy: finetune with distillation, ONNX, INT8, verify and benchmark with ONNX Runtime
   (interleaved against the unpruned model, the inference thread's CPU time), bundle — and print the summary.

Every stage resumes: rerunning ``prunegym demo`` skips what is finished.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from rich.table import Table

from prunegym.cli.util import add_command, positive_int, progress_bar, stdout
from prunegym.core.run_folder import BEST_CHECKPOINT, LAST_CHECKPOINT, METRICS_FILE, prepare_run_dir
from prunegym.core.train_config import TrainConfig

log = logging.getLogger(__name__)

DEMO_DATA = "digits?size=32"
DEMO_MODEL = "resnet20"
LATENCY_TARGET = 0.5  # keep half the baseline's latency on this device


def train_baseline(run_dir: Path, *, epochs: int, seed: int = 0) -> Path:
    """Train the demo's baseline unless ``run_dir/baseline/best.pt`` is complete."""
    import torch

    from prunegym.core.data import load_data
    from prunegym.core.models import build_model
    from prunegym.core.train import train

    out = run_dir / "baseline"
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
    done = out / METRICS_FILE
    if done.exists() and len(done.read_text().splitlines()) >= epochs:
        return out / BEST_CHECKPOINT
    data = load_data(DEMO_DATA, seed=seed)
    torch.manual_seed(seed)
    model = build_model(DEMO_MODEL, num_classes=data.num_classes, in_channels=data.in_channels)
    prepare_run_dir(out, config=cfg, resume=True, command="train")
    train(config=cfg, model=model, data=data, run_dir=out, resume=(out / LAST_CHECKPOINT).exists())
    return out / BEST_CHECKPOINT


def latency_table(run_dir: Path, baseline: Path, *, progress) -> Path:
    """Profile the predicted-latency table of the baseline on this device unless it is already there."""
    from prunegym.core.checkpoint import load_model
    from prunegym.core.data import load_data
    from prunegym.env.latency import LatencyConfig, TableBuildConfig, build_latency_table

    out = run_dir / "latency.json"
    if out.exists():
        return out
    model = load_model(str(baseline))
    config = TableBuildConfig(grid_step=4, repeats=40, rounds=2, calib_policies=16, calib_repeats=160, calib_rounds=16)
    data = load_data(DEMO_DATA)
    build_latency_table(
        model=model,
        input_shape=data.input_shape,
        config=config,
        latency=LatencyConfig(),
        out=out,
        source={"model": str(baseline), "data": DEMO_DATA},
        progress=progress,
    )
    return out


def cmd_demo(args: argparse.Namespace) -> int:
    import optuna
    import torch

    from prunegym.agents.runner import SearchConfig, run_search
    from prunegym.cli.agent import AgentTrainConfig
    from prunegym.cli.search import OptunaRunConfig, optuna_config_values
    from prunegym.deploy.bundle import speed_words
    from prunegym.deploy.replay import run_replay
    from prunegym.deploy.replay_config import ReplayConfig
    from prunegym.env.factory import EnvSpec, build_env
    from prunegym.search.optuna_config import StudyConfig
    from prunegym.search.optuna_study import run_study

    torch.set_num_threads(1)  # one thread per heavy job: on a small shared CPU two threads run several times slower
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar says enough
    run_dir = Path(args.out)
    n = args.episodes
    with progress_bar() as bar:
        task = bar.add_task("1/5 train baseline", total=None, info="")
        baseline = train_baseline(run_dir, epochs=args.epochs)

        def on_stage(stage: str, done: int, total: int) -> None:
            bar.update(task, description=f"2/5 latency table: {stage}", completed=done, total=total)

        table = latency_table(run_dir, baseline, progress=on_stage)
        spec = EnvSpec.from_options(
            model=str(baseline),
            data=DEMO_DATA,
            val_size=280,
            bn_recalib_images=256,
            latency="predicted",
            latency_table=str(table),
            target="latency",
            target_ratio=LATENCY_TARGET,
            max_ratio=0.8,
            reward="acc",
        )

        def on_episode(done: int, total: int, best: float | None) -> None:
            bar.update(task, completed=done, total=total, info="" if best is None else f"best {best:.4f}")

        bar.update(task, description="3/5 DDPG search", completed=0, total=n)
        agent_dir = run_dir / "agent"
        search = SearchConfig(agent="ddpg", episodes=n, warmup_episodes=n // 4, seed=0, checkpoint_every=10)
        agent_cfg = AgentTrainConfig(problem=spec, search=search, out=str(agent_dir))
        prepare_run_dir(agent_dir, config=agent_cfg, resume=True, command="agent train")
        agent = run_search(
            env=build_env(spec),
            config=search,
            run_dir=agent_dir,
            resume=(agent_dir / "checkpoints").exists(),
            progress=on_episode,
        )

        bar.update(task, description="4/5 Optuna study (TPE)", completed=0, total=n)
        optuna_dir = run_dir / "optuna"
        optuna_cfg = OptunaRunConfig(problem=spec, study=StudyConfig(n_trials=n, seed=0), out=str(optuna_dir))
        prepare_run_dir(optuna_dir, config=optuna_config_values(optuna_cfg), resume=True, command="optuna run")
        study = run_study(env=build_env(spec), config=optuna_cfg.study, run_dir=optuna_dir, progress=on_episode)

        winner = agent_dir if (agent.best_reward or 0.0) >= (study.best_reward or 0.0) else optuna_dir
        bar.update(task, description=f"5/5 replay {winner.name}", completed=0, total=None, info="")
        _, results = run_replay(
            ReplayConfig(
                run=str(winner),
                out=str(run_dir / "replay"),
                epochs=args.replay_epochs,
                batch_size=64,  # ~1,150 training images: batch 64 and lr 0.02 give the student 360 steps
                lr=0.02,
                calib_images=256,
                bench_threads=(1,),
                bench_repeats=300,
                bench_rounds=15,
            )
        )
    table_out = Table(title=f"search: best val top-1 at ≤ {LATENCY_TARGET:.0%} of the baseline's predicted latency")
    for col in ("method", "evaluations", "best reward", "best val top-1 %"):
        table_out.add_column(col, justify="right")
    table_out.add_row("DDPG (AMC)", str(agent.episodes), f"{agent.best_reward:.4f}", f"{100 * agent.best_reward:.2f}")
    table_out.add_row(
        "Optuna TPE", str(study.trials), f"{study.best_reward:.4f}", f"{100 * (study.best_reward or 0):.2f}"
    )
    stdout.print(table_out)
    bundle = results["bundle"]
    print((bundle / "report.md").read_text())  # a Markdown report: never wrapped
    report = json.loads((bundle / "report.json").read_text())
    v = report["variants"]
    removed = len(report["policy"].get("removed") or [])
    stdout.print(
        f"replayed the {winner.name} policy ({removed} residual block(s) removed) → {bundle}\n"
        f"test top-1 {v['baseline']['top1']:.2f}% → {v['pruned']['top1']:.2f}% (FP32), "
        f"{v['pruned+int8']['top1']:.2f}% (INT8); MACs {v['baseline']['macs']:,} → {v['pruned']['macs']:,}\n"
        f"batch-1 latency vs the unpruned FP32 model, measured interleaved here: "
        f"FP32 {speed_words(v['pruned']['speedup'])}, INT8 {speed_words(v['pruned+int8']['speedup'])}\n"
        f"try: prunegym deploy run {bundle} IMAGE.png"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "demo",
        example="prunegym demo",
    )
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--epochs", type=positive_int, default=12, help="baseline training epochs")
    p.add_argument(
        "--episodes", type=positive_int, default=40, help="search budget of the agent and of the Optuna study"
    )
    p.add_argument("--replay-epochs", type=positive_int, default=20, help="finetune epochs of the replay")
    p.set_defaults(func=cmd_demo)
