"""``prunegym compare``: exact per-run bests and per-method mean ± std, and real Optuna runs read end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from prunegym.cli.main import main
from prunegym.core.checkpoint import save_model
from prunegym.core.errors import UserError
from prunegym.core.io import read_jsonl
from prunegym.core.models import build_model
from prunegym.env import EnvSpec, build_env
from prunegym.search.compare import compare_runs, load_run, mean_std
from prunegym.search.optuna_study import StudyConfig, run_study

PNG = b"\x89PNG\r\n\x1a\n"


def record(episode: int, reward: float | None, *, acc: float | None = None, macs: float = 0.5, **extra) -> dict:
    return {
        "episode": episode,
        "reward": reward,
        "accuracy": acc if acc is not None or reward is None else reward * 100,
        "macs_ratio": macs,
        "params_ratio": 0.4,
        "latency_ms": None,
        "latency_ratio": None,
        "sigma": None,
        "seconds": {},
        "policy": {"a": 0.5},
        "actions": [0.5],
        **extra,
    }


def write_run(path: Path, config: dict, records: list[dict], *, study: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    if study is not None:
        (path / "study.yaml").write_text(yaml.safe_dump(study))
    (path / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    problem = {"model": "resnet20", "target": "macs", "target_ratio": 0.5, "reward": "acc"}
    ddpg0 = write_run(
        tmp_path / "ddpg-s0",
        {"agent": "ddpg", "seed": 0, **problem},
        [record(0, 0.30), record(1, 0.50, macs=0.45), record(2, 0.40)],
    )
    ddpg1 = write_run(
        tmp_path / "ddpg-s1",
        {"agent": "ddpg", "seed": 1, **problem},
        [record(0, 0.20), record(1, 0.60), record(2, 0.70, macs=0.41), record(3, 0.65), record(4, 0.10)],
    )
    optuna0 = write_run(
        tmp_path / "optuna-s0",
        {"command": "optuna run", "method": "optuna", "sampler": "tpe", "seed": 0, **problem},
        [
            record(0, 0.55, constraint=-0.1, trial_state="COMPLETE"),
            record(2, 0.90, constraint=0.2, trial_state="COMPLETE"),  # over budget: never the best
            record(1, None, constraint=None, trial_state="PRUNED", pruned_step=10),
            record(3, 0.58, macs=0.49, constraint=-0.01, trial_state="COMPLETE"),
        ],
        study={"method": "optuna", "sampler": "tpe", "objectives": "reward", "seed": 0},
    )
    return [ddpg0, ddpg1, optuna0]


def test_per_run_bests_and_method_mean_std_are_exact(runs: list[Path]) -> None:
    results, methods = compare_runs(runs)
    d0, d1, o0 = results
    assert (d0.method, d0.seed, d0.evaluations, d0.best_episode) == ("ddpg", 0, 3, 1)
    assert (d0.best_reward, d0.best_accuracy, d0.best_macs_ratio) == (0.50, 50.0, 0.45)
    assert (d1.best_reward, d1.best_macs_ratio, d1.evaluations) == (0.70, 0.41, 5)
    assert d1.curve == (0.20, 0.60, 0.70, 0.70, 0.70)
    assert (o0.method, o0.evaluations, o0.best_episode, o0.best_reward, o0.best_macs_ratio) == (
        "optuna-tpe",
        4,
        3,
        0.58,
        0.49,
    )
    assert o0.curve == (0.55, 0.55, 0.55, 0.58)  # the infeasible 0.90 and the pruned trial do not count
    ddpg, opt = methods
    assert (ddpg.method, ddpg.runs, ddpg.seeds) == ("ddpg", 2, (0, 1))
    assert ddpg.best_reward.mean == pytest.approx(0.60, abs=1e-15)
    assert ddpg.best_reward.std == pytest.approx(math.sqrt(0.02), abs=1e-15)  # sample std of 0.5, 0.7
    assert (ddpg.evaluations.mean, ddpg.evaluations.std) == (4.0, pytest.approx(math.sqrt(2.0)))
    assert ddpg.best_macs_ratio.mean == pytest.approx(0.43) and ddpg.best_macs_ratio.std == pytest.approx(
        math.sqrt(0.0008)
    )
    assert ddpg.best_accuracy.fmt(2) == "60.00 ± 14.14"
    assert (opt.runs, opt.best_reward.mean, opt.best_reward.std) == (1, 0.58, None)
    assert mean_std([None, 1.0, 3.0]).std == pytest.approx(math.sqrt(2.0))


def test_cli_prints_one_table_and_writes_one_plot(
    runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "cmp.png"
    assert main(["compare", *map(str, runs), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "mean ± std (2 runs)" in out and "0.6000 ± 0.1414" in out and "optuna-tpe" in out
    assert png.read_bytes()[:8] == PNG
    assert main(["compare", *map(str, runs), "--plot", "", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [m["method"] for m in data["methods"]] == ["ddpg", "optuna-tpe"]
    assert data["methods"][0]["best_reward"]["n"] == 2 and data["plot"] is None


def test_runs_of_different_problems_are_refused_or_grouped_apart(runs: list[Path], tmp_path: Path, capsys) -> None:
    other = write_run(tmp_path / "other", {"agent": "ddpg", "seed": 0, "target_ratio": 0.3}, [record(0, 0.2)])
    assert main(["compare", str(runs[0]), str(other), "--plot", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different problems (target_ratio: " in err and "--allow-mixed" in err
    assert main(["compare", str(runs[0]), str(other), "--plot", "", "--allow-mixed", "--json"]) == 0
    methods = [m["method"] for m in json.loads(capsys.readouterr().out)["methods"]]
    assert len(methods) == 2 and all(m.startswith("ddpg (target_ratio=") for m in methods)  # never averaged
    with pytest.raises(UserError, match=r"has no episodes\.jsonl"):
        load_run(tmp_path / "nothing")


def test_compare_reads_real_optuna_runs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = save_model(tmp_path / "m.pt", model=build_model("smallcnn", in_channels=1))  # untrained: plumbing only
    env = build_env(EnvSpec.from_options(model=str(model), data="digits", val_size=100, bn_recalib_images=100))
    for sampler in ("tpe", "random"):
        cfg = StudyConfig(sampler=sampler, n_trials=3, n_startup_trials=2, tensorboard=False)
        run_study(env=env, config=cfg, run_dir=tmp_path / sampler)
    results, methods = compare_runs([tmp_path / "tpe", tmp_path / "random"])
    assert [m.method for m in methods] == ["optuna-tpe", "optuna-random"]
    for r, sampler in zip(results, ("tpe", "random"), strict=True):
        records = read_jsonl(tmp_path / sampler / "episodes.jsonl")
        assert r.evaluations == 3
        assert r.best_reward == max(rec["reward"] for rec in records)
        assert r.curve[-1] == r.best_reward


def test_compare_reports_realization_when_latency_is_known(tmp_path: Path, capsys) -> None:
    run = write_run(
        tmp_path / "lat",
        {"agent": "ddpg", "seed": 0},
        [record(0, 0.5, macs=0.45, latency_ratio=0.5), record(1, 0.7, macs=0.4, latency_ratio=0.8)],
    )
    assert main(["compare", str(run), "--plot", "", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["runs"][0]["realization"] == pytest.approx(0.4 / 0.8)  # speed-up 1.25× at 2.5× fewer MACs
    assert main(["compare", str(run), "--plot", ""]) == 0
    assert "realization" in capsys.readouterr().out
