"""Time ResNet-56 episodes of the PruningEnv (issue 4's budget: ≤ 15 s with BN re-calibration, 2,000 val images
and measured latency).

    .venv/bin/python bench/episode_time.py --threads 1 --episodes 3
"""

from __future__ import annotations

import argparse

import numpy as np

from prunegym.env import EnvSpec, build_env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="PyTorch intra-op threads")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--val-size", type=int, default=2000)
    args = ap.parse_args()
    env = build_env(
        EnvSpec.from_options(
            model="resnet56",
            weights="../shared/data/pretrained/resnet56-4bfd9763.th",
            data="cifar10:../shared/data/cifar-10-batches-py",
            val_size=args.val_size,
            latency="measured",
            latency_repeats=30,
            torch_threads=args.threads,
        )
    )
    rng = np.random.default_rng(0)
    for _ in range(args.episodes):
        env.reset(seed=0)
        info: dict = {}
        for _ in range(env.num_groups):
            _, _, _, _, info = env.step(np.array([rng.uniform(-1, 1)], dtype=np.float32))
        parts = ", ".join(f"{k} {v:.2f}" for k, v in info["seconds"].items())
        print(
            f"episode {info['seconds']['total']:.2f} s ({parts}); val top-1 {info['accuracy']:.2f}%, "
            f"MACs {info['macs_ratio']:.3f}, latency {info['latency_ms']:.3f} ms"
        )


if __name__ == "__main__":
    main()
