"""Issue 14's search science: is the BN-re-estimated search accuracy a good proxy for accuracy after finetuning?

Takes ``--count`` policies spread evenly over the search-accuracy range of the given search runs (their
episodes.jsonl), finetunes each briefly from the same checkpoint (``--epochs``, cosine LR, distillation from the
unpruned model, the same seed), scores each on the test split, and reports the Spearman rank correlation between
search accuracy and finetuned accuracy. Results are written after every policy, and a rerun skips the ones done.

    .venv/bin/python bench/proxy_spearman.py runs/r20-lat-ddpg runs/r20-lat-optuna \\
        --out bench/results/resnet20-latency/proxy-spearman.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from prunegym.core.checkpoint import load_model
from prunegym.core.data import load_data
from prunegym.core.evaluate import evaluate, input_norm
from prunegym.core.io import read_jsonl, write_json
from prunegym.core.plots import save_png
from prunegym.core.policy import Policy
from prunegym.core.pruning import apply_policy
from prunegym.core.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = yaml.safe_load((Path(args.runs[0]) / "config.yaml").read_text())
    records = [
        {**r, "run": Path(run).name}
        for run in args.runs
        for r in read_jsonl(Path(run) / "episodes.jsonl")
        if r.get("accuracy") is not None
    ]
    records.sort(key=lambda r: (r["accuracy"], r["run"], r["episode"]))
    picks = [records[round(i)] for i in np.linspace(0, len(records) - 1, args.count)]
    data = load_data(cfg["data"], val_size=cfg.get("val_size"), seed=cfg.get("seed", 0))
    base = load_model(cfg["model"], weights=cfg.get("weights"), num_classes=data.num_classes).eval()
    mean, std = input_norm(base, mean=data.mean, std=data.std)
    out = Path(args.out)
    done = json.loads(out.read_text())["rows"] if out.exists() else []
    rows = list(done)
    for row, rec in zip(done, picks, strict=False):  # a rerun continues the same picks, or refuses
        if (row.get("run"), row.get("episode")) not in {(rec["run"], rec["episode"]), (None, None)}:
            raise SystemExit(f"{out} was made from other runs or another --count; pass a new --out")
    for rec in picks[len(done) :]:
        policy = Policy(ratios=rec["policy"], removed=tuple(rec.get("removed") or ()), model=cfg["model"])
        student = apply_policy(base, policy, input_shape=data.input_shape)
        with tempfile.TemporaryDirectory() as tmp:
            config = TrainConfig(
                model=cfg["model"],
                data=cfg["data"],
                out=tmp,
                epochs=args.epochs,
                lr=args.lr,
                warmup_epochs=0.0,
                teacher=cfg["model"],
                eval_test=False,
                seed=0,
            )
            train(config=config, model=student, data=data, run_dir=Path(tmp), teacher=base)
        test = evaluate(student.eval(), data.test_x, data.test_y, mean=mean, std=std)
        rows.append(
            {
                "run": rec["run"],
                "episode": rec["episode"],
                "search_val_top1": rec["accuracy"],
                "finetuned_test_top1": round(test.top1, 2),
                "latency_ratio": rec.get("latency_ratio"),
                "removed": len(policy.removed),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        write_json(out, {"runs": args.runs, "epochs": args.epochs, "lr": args.lr, "rows": rows})
    rho = float(spearmanr([r["search_val_top1"] for r in rows], [r["finetuned_test_top1"] for r in rows]).statistic)
    write_json(out, {"runs": args.runs, "epochs": args.epochs, "lr": args.lr, "rows": rows, "spearman": rho})
    plot = save_png(scatter(rows, rho=rho, epochs=args.epochs), out.with_suffix(".png"))
    print(f"Spearman(search val top-1, finetuned test top-1) = {rho:.3f} over {len(rows)} policies; {plot}")


def scatter(rows: list[dict], *, rho: float, epochs: int) -> Figure:
    """Search accuracy against finetuned accuracy, one point per policy, coloured by its method."""
    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.add_subplot()
    for method in sorted({r["run"].split("-")[0] for r in rows}):
        mine = [r for r in rows if r["run"].split("-")[0] == method]
        ax.scatter([r["search_val_top1"] for r in mine], [r["finetuned_test_top1"] for r in mine], label=method)
    for r in rows:
        ax.annotate(f"{r['latency_ratio']:.2f}", (r["search_val_top1"], r["finetuned_test_top1"]), fontsize=7)
    ax.set_xlabel("search val top-1 (BN re-estimated, no finetune) %")
    ax.set_ylabel(f"test top-1 after {epochs} epoch(s) of finetune %")
    ax.set_title(f"Is the search accuracy a proxy? Spearman ρ = {rho:.2f} (labels: latency ratio)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
