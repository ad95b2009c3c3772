"""Re-score each run's best policy on an independent, larger val split (a diagnosis of selection noise).

A search picks the best of N noisy scores; with 1,000 val images (±1.5 points of sampling noise) the maximum
is biased upwards, more so for methods that evaluate more distinct policies. Scoring the chosen policies again
on 5,000 other training-set images (another seed's carve) shows their real quality.

    .venv/bin/python bench/rescore_best.py runs/bench-r20-*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from prunegym.core.policy import Policy
from prunegym.env.evaluator import Evaluator
from prunegym.env.factory import EnvSpec, build_env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1, help="seed of the val carve (the searches used 0)")
    ap.add_argument("--bn-recalib-augment", default="none", help="BN re-estimation augmentation, the same for all runs")
    args = ap.parse_args()
    evaluator: Evaluator | None = None
    rows = []
    for run in map(Path, args.runs):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        if evaluator is None:
            augment = args.bn_recalib_augment or None
            spec = EnvSpec.from_mapping(
                {**cfg, "val_size": args.val_size, "seed": args.seed, "bn_recalib_augment": augment}
            )
            evaluator = build_env(spec).evaluator
        policy = Policy.load(run / "best_policy.yaml")
        result = evaluator.evaluate(policy.ratios, removed=policy.removed)
        rows.append(
            {
                "run": run.name,
                "method": cfg.get("agent") or cfg.get("sampler", "optuna"),
                "search_val_top1": policy.accuracy,
                "rescored_top1": round(result.accuracy, 2),
                "bn_recalib_augment": evaluator.config.bn_recalib_augment or evaluator.data.augment,
                "macs_ratio": round(result.macs / evaluator.base_macs, 4),
                "removed_blocks": len(policy.removed),
            }
        )
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
