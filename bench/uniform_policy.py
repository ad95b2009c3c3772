"""Score the uniform policy (one ratio for every group, the smallest that meets the run's MAC or latency target,
no block removed) with exactly
the evaluator of a search run, and write it as a one-episode run folder that `prunegym compare` reads.

Where width alone cannot reach a latency budget (ResNet-56 at 0.36 on the AVX-512 Xeon: every group at the
largest ratio still keeps 0.53 of the latency) and the run acts on depth, the uniform policy also removes the
same number k of blocks from the end of every stage, the smallest k for which a ratio meets the budget.

    .venv/bin/python bench/uniform_policy.py --like runs/bench-r20-ddpg-s0 --out runs/bench-r20-uniform
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import yaml

from prunegym.core.io import append_jsonl, write_yaml
from prunegym.core.pruning import uniform_ratio_for_macs
from prunegym.core.records import episode_record
from prunegym.env.factory import EnvSpec, build_env


def stages(blocks: Iterable[str]) -> dict[str, list[str]]:
    """Block names (``layer2.7``) by stage (``layer2``), in block order."""
    by_stage: dict[str, list[str]] = {}
    for block in sorted(blocks, key=lambda b: (b.rsplit(".", 1)[0], int(b.rsplit(".", 1)[1]))):
        by_stage.setdefault(block.rsplit(".", 1)[0], []).append(block)
    return by_stage


def deepest_stage(blocks: Iterable[str]) -> int:
    """The number of removable blocks of the deepest stage (0 without depth actions)."""
    return max((len(v) for v in stages(blocks).values()), default=0)


def last_blocks(blocks: Iterable[str], *, per_stage: int) -> list[str]:
    """The last ``per_stage`` removable blocks of every stage (all but one where a stage has fewer)."""
    return [b for v in stages(blocks).values() for b in v[len(v) - min(per_stage, len(v) - 1) :]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--like", required=True, help="a search run folder whose config.yaml defines the problem")
    ap.add_argument("--out", required=True, help="run folder to write")
    ap.add_argument("--bn-recalib-augment", default=None, help="override the run's BN re-estimation augmentation")
    args = ap.parse_args()
    cfg = yaml.safe_load((Path(args.like) / "config.yaml").read_text())
    if args.bn_recalib_augment is not None:
        cfg = {**cfg, "bn_recalib_augment": args.bn_recalib_augment}
    spec = EnvSpec.from_mapping(cfg)
    env = build_env(spec)
    if spec.env.target == "latency":  # the smallest uniform ratio whose predicted latency keeps the budget
        lat = env.latency
        names = env.group_names

        removed: list[str] = []

        def ratio_of(r: float) -> float:
            return float(lat.predict(dict.fromkeys(names, r), removed=removed)) / float(lat.baseline_ms)

        lo, hi = 0.0, spec.env.max_ratio
        for k in range(1, deepest_stage(env.blocks.values())):
            if ratio_of(hi) <= spec.env.target_ratio:
                break
            removed = last_blocks(env.blocks.values(), per_stage=k)
        if ratio_of(hi) > spec.env.target_ratio:
            raise SystemExit(f"uniform max_ratio {hi} keeps {ratio_of(hi):.3f} of the latency: over the budget")
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if ratio_of(mid) <= spec.env.target_ratio else (mid, hi)
        ratio = hi
    else:
        ratio = uniform_ratio_for_macs(
            env.evaluator.model,
            input_shape=env.evaluator.input_shape,
            target_macs_fraction=spec.env.target_ratio,
            round_to=spec.evaluator.round_to,
        )
    env.reset(seed=spec.seed)
    info: dict = {}
    remove = {g for g, b in env.blocks.items() if b in removed} if spec.env.target == "latency" else set()
    for name in env.group_names:  # the env's own action for the ratio (a depth env's top band removes blocks)
        action = env.action_of(ratio, remove=name in remove, group=name)
        _, _, _, _, info = env.step(np.array([action], dtype=np.float32))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(
        out / "config.yaml",
        {
            **{k: v for k, v in cfg.items() if k not in {"agent", "episodes"}},
            "command": "uniform",
            "agent": "uniform",
            "episodes": 1,
        },
    )
    (out / "episodes.jsonl").unlink(missing_ok=True)
    append_jsonl(out / "episodes.jsonl", episode_record(episode=0, info=info, sigma=None))
    env.policy_from_info(info, source="uniform").save(out / "best_policy.yaml")
    lat = info.get("latency_ratio")
    print(
        f"uniform ratio {ratio:.4f}: val top-1 {info['accuracy']:.2f}%, MACs ratio {info['macs_ratio']:.4f}"
        + ("" if lat is None else f", predicted latency ratio {lat:.4f}")
    )


if __name__ == "__main__":
    main()
