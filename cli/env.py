"""``prunegym env rollout`` (``prunegym latency build|check`` live in :mod:`prunegym.cli.latency`)."""

from __future__ import annotations

import argparse
import logging

import numpy as np
from rich.table import Table

from prunegym.cli.util import (
    add_command,
    add_config_flags,
    config_from_args,
    positive_int,
    print_json,
    progress_bar,
    stdout,
)
from prunegym.env.spec import EnvSpec

log = logging.getLogger(__name__)


def rollout_actions(agent: str, *, episode: int, episodes: int, num_groups: int, rng: np.random.Generator) -> list:
    """Actions of one baseline episode: ``random`` (uniform in [-1, 1]) or ``uniform`` (one ratio for every group,
    swept from the smallest to the largest action over the episodes)."""
    if agent == "random":
        return list(rng.uniform(-1.0, 1.0, size=num_groups))
    a = -1.0 + 2.0 * episode / max(1, episodes - 1)
    return [a] * num_groups


def cmd_rollout(args: argparse.Namespace) -> int:
    from prunegym.env.factory import build_env

    spec = config_from_args(EnvSpec, args)
    env = build_env(spec)
    rng = np.random.default_rng(spec.seed)
    rows = []
    with progress_bar() as bar:
        task = bar.add_task(f"{args.agent} rollouts", total=args.episodes, info="")
        for ep in range(args.episodes):
            env.reset(seed=spec.seed + ep)
            info: dict = {}
            for a in rollout_actions(
                args.agent, episode=ep, episodes=args.episodes, num_groups=env.num_groups, rng=rng
            ):
                _, _, _, _, info = env.step(np.array([a], dtype=np.float32))
            rows.append(
                {
                    "episode": ep,
                    **{k: info[k] for k in ("reward", "accuracy", "macs_ratio", "latency_ms", "latency_ratio")},
                    "seconds": info["seconds"],
                }
            )
            bar.update(task, advance=1, info=f"acc {info['accuracy']:.2f}% MACs {info['macs_ratio']:.2f}")
    if args.json:
        print_json(rows)
        return 0
    table = Table(
        title=f"{args.agent} rollouts on {spec.model} ({env.num_groups} groups, target {spec.env.target} "
        f"{spec.env.target_ratio})"
    )
    for col in ("episode", "reward", "val top-1 %", "MACs ratio", "latency ms", "latency ratio", "seconds"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["episode"]),
            f"{r['reward']:.4f}",
            f"{r['accuracy']:.2f}",
            f"{r['macs_ratio']:.3f}",
            "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f}",
            "-" if r["latency_ratio"] is None else f"{r['latency_ratio']:.3f}",
            f"{r['seconds'].get('total', 0.0):.2f}",
        )
    stdout.print(table)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "env",
        example="prunegym env rollout --agent random --episodes 20 --model smallcnn --data digits --val-size 280",
    )
    env_sub = p.add_subparsers(dest="env_command", metavar="ACTION")
    r = add_command(
        env_sub,
        "rollout",
        help="run random or uniform episodes; print accuracy vs MACs/latency",
        example="prunegym env rollout --agent uniform --episodes 20 --model resnet20 --weights "
        "../shared/data/pretrained/resnet20-12fca82f.th --data cifar10:../shared/data/cifar-10-batches-py "
        "--latency measured",
    )
    add_config_flags(r, EnvSpec)
    r.add_argument("--agent", choices=("random", "uniform"), default="random", help="baseline agent")
    r.add_argument("--episodes", type=positive_int, default=20, help="episodes to run")
    r.add_argument("--json", action="store_true", help="print the episodes as JSON")
    r.set_defaults(func=cmd_rollout)
    p.set_defaults(func=lambda a: p.print_help() or 2)
