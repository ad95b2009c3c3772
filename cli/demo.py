"""``prunegym demo``: the whole pipeline on the embedded default (scikit-learn's digits), no downloads, no flags.

1. train a baseline small CNN on digits;
2. search per-group pruning ratios with the AMC-style DDPG agent (keep 50% of the MACs);
3. run an Optuna (TPE) study over the same ratios with the same evaluator, as the baseline to beat;
4. replay the better policy: finetune with distillation, ONNX export, INT8, verify with ONNX Runtime,
   benchmark, bundle — and print the summary.

Every stage resumes: rerunning ``prunegym demo`` skips what is finished.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from rich.table import Table

from prunegym.cli.util import add_command, progress_bar, stdout
from prunegym.core.data import load_data
from prunegym.core.models import build_model
from prunegym.core.run_folder import BEST_CHECKPOINT, LAST_CHECKPOINT, METRICS_FILE, prepare_run_dir
from prunegym.core.train import TrainConfig, train

log = logging.getLogger(__name__)

DEMO_DATA = "digits"
DEMO_MODEL = "smallcnn"


def train_baseline(run_dir: Path, *, epochs: int = 30, seed: int = 0) -> Path:
    """Train the demo's baseline (small CNN on digits) unless ``run_dir/baseline/best.pt`` is complete."""
    import torch

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


def cmd_demo(args: argparse.Namespace) -> int:
    from prunegym.agents.runner import SearchConfig, run_search
    from prunegym.cli.agent import AgentTrainConfig
    from prunegym.cli.search import OptunaRunConfig, optuna_config_values
    from prunegym.deploy.replay import run_replay
    from prunegym.deploy.replay_config import ReplayConfig
    from prunegym.env.factory import EnvSpec, build_env
    from prunegym.search.optuna_config import StudyConfig
    from prunegym.search.optuna_study import run_study

    run_dir = Path(args.out)
    n = args.episodes
    with progress_bar() as bar:
        task = bar.add_task("1/4 train baseline", total=None, info="")
        baseline = train_baseline(run_dir, epochs=args.epochs)
        spec = EnvSpec.from_options(
            model=str(baseline),
            data=DEMO_DATA,
            val_size=280,
            bn_recalib_images=256,
            target="macs",
            target_ratio=0.5,
            max_ratio=0.8,
            reward="acc",
        )

        def on_episode(done: int, total: int, best: float | None) -> None:
            bar.update(task, completed=done, total=total, info="" if best is None else f"best {best:.4f}")

        bar.update(task, description="2/4 DDPG search", completed=0, total=n)
        agent_dir = run_dir / "agent"
        search = SearchConfig(agent="ddpg", episodes=n, warmup_episodes=n // 3, seed=0, checkpoint_every=10)
        agent_cfg = AgentTrainConfig(problem=spec, search=search, out=str(agent_dir))
        prepare_run_dir(agent_dir, config=agent_cfg, resume=True, command="agent train")
        agent = run_search(
            env=build_env(spec),
            config=search,
            run_dir=agent_dir,
            resume=(agent_dir / "checkpoints").exists(),
            progress=on_episode,
        )

        bar.update(task, description="3/4 Optuna study (TPE)", completed=0, total=n)
        optuna_dir = run_dir / "optuna"
        optuna_cfg = OptunaRunConfig(problem=spec, study=StudyConfig(n_trials=n, seed=0), out=str(optuna_dir))
        prepare_run_dir(optuna_dir, config=optuna_config_values(optuna_cfg), resume=True, command="optuna run")
        study = run_study(env=build_env(spec), config=optuna_cfg.study, run_dir=optuna_dir, progress=on_episode)

        winner = agent_dir if (agent.best_reward or 0.0) >= (study.best_reward or 0.0) else optuna_dir
        bar.update(task, description=f"4/4 replay {winner.name}", completed=0, total=None, info="")
        _, results = run_replay(
            ReplayConfig(
                run=str(winner),
                out=str(run_dir / "replay"),
                epochs=args.replay_epochs,
                calib_images=256,
                bench_threads=(1,),
                bench_repeats=30,
                bench_rounds=3,
            )
        )
    table = Table(title="search: best val top-1 at ≤ 50% of the MACs (same evaluator, same budget)")
    for col in ("method", "evaluations", "best reward", "best val top-1 %"):
        table.add_column(col, justify="right")
    table.add_row("DDPG (AMC)", str(agent.episodes), f"{agent.best_reward:.4f}", f"{100 * agent.best_reward:.2f}")
    table.add_row("Optuna TPE", str(study.trials), f"{study.best_reward:.4f}", f"{100 * (study.best_reward or 0):.2f}")
    stdout.print(table)
    bundle = results["bundle"]
    stdout.print((bundle / "report.md").read_text())
    report = json.loads((bundle / "report.json").read_text())
    v = report["variants"]
    stdout.print(
        f"replayed the {winner.name} policy → {bundle}\n"
        f"test top-1 {v['baseline']['top1']:.2f}% → {v['pruned']['top1']:.2f}% (FP32), "
        f"{v['pruned+int8']['top1']:.2f}% (INT8); MACs {v['baseline']['macs']:,} → {v['pruned']['macs']:,}; "
        f"try: prunegym deploy run {bundle} IMAGE.png"
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
    p.add_argument("--episodes", type=int, default=60, help="search budget of the agent and of the Optuna study")
    p.add_argument("--replay-epochs", type=int, default=15, help="finetune epochs of the replay")
    p.set_defaults(func=cmd_demo)
