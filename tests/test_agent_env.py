"""The search agents on the real PruningEnv, through the CLI as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from prunegym.cli.main import main
from prunegym.core.io import read_jsonl
from prunegym.core.policy import Policy


def agent_train(model: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "agent",
            "train",
            "--model",
            str(model),
            "--data",
            "digits",
            "--val-size",
            "200",
            "--bn-recalib-images",
            "200",
            "--episodes",
            "8",
            "--warmup-episodes",
            "3",
            "--checkpoint-every",
            "2",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_ddpg_search_writes_every_output_and_resumes(digits_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "amc"
    assert agent_train(digits_model, out) == 0
    records = read_jsonl(out / "episodes.jsonl")
    assert [r["episode"] for r in records] == list(range(8))
    assert all(r["macs_ratio"] <= 0.5 + 1e-9 for r in records)  # the action wall holds the budget every episode
    assert records[2]["sigma"] is None and records[3]["sigma"] == pytest.approx(0.5)
    best = Policy.load(out / "best_policy.yaml")
    assert best.model == "smallcnn" and best.input_shape == (1, 8, 8)
    assert best.reward == max(r["reward"] for r in records)
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert (out / "checkpoints" / "latest.json").exists() and (out / "config.yaml").exists()
    # a larger budget continues from the last checkpoint: episode numbers continue, none is repeated
    assert agent_train(digits_model, out, "--episodes", "10", "--resume") == 0
    assert [r["episode"] for r in read_jsonl(out / "episodes.jsonl")] == list(range(10))
    # without --resume the folder is protected
    assert agent_train(digits_model, out) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["agent", "show", str(out)]) == 0
    assert (out / "search_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_search(digits_model: Path, tmp_path: Path) -> None:
    assert agent_train(digits_model, tmp_path / "a") == 0
    assert agent_train(digits_model, tmp_path / "b") == 0
    a = read_jsonl(tmp_path / "a" / "episodes.jsonl")
    b = read_jsonl(tmp_path / "b" / "episodes.jsonl")
    assert [r["policy"] for r in a] == [r["policy"] for r in b]
    assert [r["reward"] for r in a] == [r["reward"] for r in b]


def test_random_search_and_replay_to_a_bundle(digits_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "rand"
    assert agent_train(digits_model, out, "--agent", "random") == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["agent"] == "random"
    code = main(
        [
            "replay",
            "--run",
            str(out),
            "--epochs",
            "2",
            "--max-steps-per-epoch",
            "6",
            "--calib-images",
            "64",
            "--bench-threads",
            "1",
            "--bench-repeats",
            "5",
            "--bench-rounds",
            "1",
            "--bench-batch",
            "8",
        ]
    )
    assert code == 0
    bundle = out / "replay" / "bundle"
    report = json.loads((bundle / "report.json").read_text())
    variants = report["variants"]
    assert variants["pruned"]["macs"] < 0.51 * variants["baseline"]["macs"]
    assert abs(variants["pruned+int8"]["top1"] - variants["pruned"]["top1"]) <= 1.0  # INT8 within 1 point of FP32
    assert report["agreement_with_pytorch"]["pruned"]["top1_agreement"] == 100.0
    for name in ("model.onnx", "model.int8.onnx", "preprocessing.json", "labels.txt", "report.md"):
        assert (bundle / name).exists(), name
    assert (bundle / "plots" / "channels.png").exists()

    # the bundle classifies images through the CLI in a process where importing torch fails
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    img = tmp_path / "digit.png"
    Image.fromarray((np.eye(8) * 255).astype(np.uint8)).save(img)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from prunegym.cli.main import main\n"
        f"rc = main(['deploy', 'run', {str(bundle)!r}, {str(img)!r}, '--json'])\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    pred = json.loads(proc.stdout)[0]
    assert pred["image"] == str(img) and len(pred["top"]) == 3 and pred["label"] in {str(i) for i in range(10)}
    assert sum(t["probability"] for t in pred["top"]) <= 1.0 + 1e-6
