"""``prunegym agent train`` and ``prunegym agent show``."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rich.table import Table

from prunegym.agents.search_config import SearchConfig
from prunegym.cli.util import (
    add_command,
    add_config_flags,
    config_from_args,
    progress_bar,
    stdout,
)
from prunegym.core.errors import UserError
from prunegym.core.io import read_jsonl, write_json
from prunegym.core.run_folder import (
    BEST_POLICY_FILE,
    EPISODES_FILE,
    GROUPS_FILE,
    prepare_run_dir,
    read_run_config,
    refuse_existing_run,
)
from prunegym.env.spec import EnvSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentTrainConfig:
    """``prunegym agent train``: the search problem, the agent and its budget, and the run folder.

    Args:
        problem: the search problem (model, data, evaluator, episode, device latency).
        search: the agent and its budget.
        out: run folder.
    """

    problem: EnvSpec
    search: SearchConfig = field(default_factory=SearchConfig)
    out: str = "runs/agent"


def cmd_train(args: argparse.Namespace) -> int:
    from prunegym.agents.runner import run_search
    from prunegym.env.factory import build_env

    cfg = config_from_args(AgentTrainConfig, args)
    refuse_existing_run(cfg.out, resume=args.resume)  # before any data is loaded
    done = read_jsonl(Path(cfg.out) / EPISODES_FILE) if args.resume else []
    if done and len(done) >= cfg.search.episodes:  # a finished run: nothing to load
        best = max(done, key=lambda r: r["reward"])
        stdout.print(
            f"{cfg.out} already ran {len(done)} episodes; best reward {best['reward']:.4f} at episode "
            f"{best['episode']} → {Path(cfg.out) / BEST_POLICY_FILE}"
        )
        return 0
    env = build_env(cfg.problem)
    run_dir = prepare_run_dir(cfg.out, config=cfg, resume=args.resume, command="agent train")
    write_json(run_dir / GROUPS_FILE, {g.name: g.out_channels for g in env.groups})
    with progress_bar() as bar:
        task = bar.add_task(f"{cfg.search.agent} search", total=cfg.search.episodes, info="")

        def on_episode(done: int, total: int, best: float | None) -> None:
            bar.update(task, completed=done, total=total, info="" if best is None else f"best reward {best:.4f}")

        summary = run_search(env=env, config=cfg.search, run_dir=run_dir, resume=args.resume, progress=on_episode)
    stdout.print(
        f"{summary.episodes} episodes; best reward {summary.best_reward:.4f} at episode {summary.best_episode}"
        f" → {run_dir / BEST_POLICY_FILE}"
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from prunegym.agents.plots import plot_run

    run_dir = Path(args.run)
    records = read_jsonl(run_dir / EPISODES_FILE)
    if not records:
        raise UserError(f"{run_dir} has no episodes.jsonl records; pass a run folder of `prunegym agent train`")
    cfg = read_run_config(run_dir)
    channels = yaml.safe_load((run_dir / GROUPS_FILE).read_text()) if (run_dir / GROUPS_FILE).exists() else None
    paths = plot_run(run_dir=run_dir, channels=channels, warmup_episodes=int(cfg.get("warmup_episodes", 0)))
    best = max(records, key=lambda r: r["reward"])
    table = Table(title=f"{run_dir} — {cfg.get('agent', '?')} on {cfg.get('model', '?')}")
    table.add_column("")
    table.add_column("value", justify="right")
    rows = [
        ("episodes", str(len(records))),
        ("best episode", str(best["episode"])),
        ("best reward", f"{best['reward']:.4f}"),
        ("val top-1 of best", f"{best['accuracy']:.2f}%"),
        ("MACs ratio of best", f"{best['macs_ratio']:.3f}"),
        ("latency of best", "-" if best.get("latency_ms") is None else f"{best['latency_ms']:.3f} ms"),
        ("latency ratio of best", "-" if best.get("latency_ratio") is None else f"{best['latency_ratio']:.3f}"),
        ("blocks removed by best", ", ".join(best.get("removed") or []) or "none"),
        (
            "mean reward, last 10%",
            f"{sum(r['reward'] for r in records[-max(1, len(records) // 10) :]) / max(1, len(records) // 10):.4f}",
        ),
    ]
    for k, v in rows:
        table.add_row(k, v)
    stdout.print(table)
    for p in paths:
        stdout.print(f"wrote {p}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "agent",
        example="prunegym agent train --model resnet20 --weights ../shared/data/pretrained/"
        "resnet20-12fca82f.th --data cifar10:../shared/data/cifar-10-batches-py --out runs/amc-r20",
    )
    agent_sub = p.add_subparsers(dest="agent_command", metavar="ACTION")
    t = add_command(
        agent_sub,
        "train",
        help="search per-group pruning ratios with an RL agent (or random search)",
        example="prunegym agent train --model runs/demo/baseline --data 'digits?size=32' --val-size 280 "
        "--episodes 40 --warmup-episodes 10 --out runs/amc-digits   # after prunegym demo",
    )
    add_config_flags(t, AgentTrainConfig)
    t.add_argument("--resume", action="store_true", help="continue the search in --out from its last checkpoint")
    t.set_defaults(func=cmd_train)
    s = add_command(
        agent_sub,
        "show",
        help="summary table, search curve and per-layer policy plots of a run",
        example="prunegym agent show runs/amc-r20",
    )
    s.add_argument("run", help="run folder")
    s.set_defaults(func=cmd_show)
    p.set_defaults(func=lambda a: p.print_help() or 2)
