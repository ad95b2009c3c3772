"""The Optuna baseline on a real tiny problem: a small CNN trained on digits, pruned and scored by the real env."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from prunegym.cli.main import main
from prunegym.core.errors import ConfigError, UserError
from prunegym.core.io import read_jsonl
from prunegym.core.policy import Policy
from prunegym.core.pruning import apply_policy
from prunegym.core.records import RECORD_KEYS
from prunegym.core.stats import model_stats
from prunegym.env import EnvSpec, build_env
from prunegym.search.optuna_plots import ParetoPoint, pareto_front
from prunegym.search.optuna_study import StudyConfig, load_run_study, run_study

PNG = b"\x89PNG\r\n\x1a\n"


def spec(model: Path, **kw) -> EnvSpec:
    return EnvSpec.from_options(model=str(model), data="digits", val_size=200, bn_recalib_images=200, **kw)


def study_config(**kw) -> StudyConfig:
    return StudyConfig(**{"n_trials": 5, "n_startup_trials": 3, "tensorboard": False, **kw})


def trials_of(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    study, _ = load_run_study(run_dir)
    return study.get_trials(deepcopy=False)


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_seeded_study_is_reproducible(digits_model: Path, tmp_path: Path) -> None:
    a = run_study(env=build_env(spec(digits_model)), config=study_config(seed=3), run_dir=tmp_path / "a")
    b = run_study(env=build_env(spec(digits_model)), config=study_config(seed=3), run_dir=tmp_path / "b")
    ta, tb = trials_of(tmp_path / "a"), trials_of(tmp_path / "b")
    assert [t.params for t in ta] == [t.params for t in tb]
    assert [t.values for t in ta] == [t.values for t in tb]
    assert len(ta) == 5 and all(t.state == TrialState.COMPLETE for t in ta)
    ra, rb = read_jsonl(tmp_path / "a" / "episodes.jsonl"), read_jsonl(tmp_path / "b" / "episodes.jsonl")
    assert without_timing(ra) == without_timing(rb)
    assert [r["episode"] for r in ra] == [0, 1, 2, 3, 4]
    assert set(RECORD_KEYS) <= set(ra[0])
    # the record is the trial: same reward, and the budget constraint is recorded (action wall keeps it feasible)
    for rec, t in zip(ra, ta, strict=True):
        assert rec["reward"] == t.value and rec["accuracy"] == t.user_attrs["accuracy"]
        assert t.constraints["budget"] == rec["constraint"] <= 0.0 and rec["macs_ratio"] <= 0.5 + 1e-9
    assert a.best_reward == b.best_reward == max(t.value for t in ta)
    other = run_study(env=build_env(spec(digits_model)), config=study_config(seed=4), run_dir=tmp_path / "c")
    assert [t.params for t in trials_of(tmp_path / "c")] != [t.params for t in ta]
    assert other.trials == 5
    assert (tmp_path / "a" / "search_curve.png").read_bytes()[:8] == PNG


def test_exported_policy_loads_applies_and_matches_the_trial_macs(digits_model: Path, tmp_path: Path) -> None:
    env = build_env(spec(digits_model))
    run_study(env=env, config=study_config(), run_dir=tmp_path / "run")
    out = tmp_path / "policy.yaml"
    assert main(["optuna", "best", str(tmp_path / "run"), "--out", str(out)]) == 0
    policy = Policy.load(out)
    study, _ = load_run_study(tmp_path / "run")
    best = study.best_trial
    assert policy.source == "optuna" and policy.trial == best.number
    assert policy.reward == best.value and policy.accuracy == best.user_attrs["accuracy"]
    assert policy.metrics["macs_ratio"] == best.user_attrs["macs_ratio"]
    pruned = apply_policy(env.evaluator.model, policy, input_shape=env.evaluator.input_shape)
    base = model_stats(env.evaluator.model, input_shape=env.evaluator.input_shape).macs
    macs = model_stats(pruned, input_shape=env.evaluator.input_shape).macs
    assert macs / base == pytest.approx(best.user_attrs["macs_ratio"], abs=1e-12)
    # and best_policy.yaml (this worker's best reward) is the same trial here
    assert Policy.load(tmp_path / "run" / "best_policy.yaml").trial == best.number


@pytest.mark.parametrize("sampler", ["nsga2", "motpe"])
def test_multi_objective_study_gives_a_pareto_front_and_png(digits_model: Path, tmp_path: Path, sampler: str) -> None:
    cfg = study_config(sampler=sampler, objectives="accuracy,macs", n_trials=8, population_size=4)
    summary = run_study(env=build_env(spec(digits_model, action_wall=False)), config=cfg, run_dir=tmp_path)
    study, _ = load_run_study(tmp_path)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert summary.pareto and set(summary.pareto) == {t.number for t in study.best_trials}
    assert (tmp_path / "pareto.png").read_bytes()[:8] == PNG
    # without the wall some trials may be over budget: those are never on the (constrained) front
    for t in study.best_trials:
        assert t.constraints["budget"] <= 0.0
    assert main(["optuna", "best", str(tmp_path)]) == 2  # multi-objective: a constraint must pick the point


def test_pareto_front_keeps_only_non_dominated_feasible_points() -> None:
    pts = [
        ParetoPoint(0, 90.0, 0.5),
        ParetoPoint(1, 80.0, 0.3),
        ParetoPoint(2, 85.0, 0.6),  # dominated by 0
        ParetoPoint(3, 95.0, 0.2, feasible=False),
        ParetoPoint(4, 80.0, 0.3),  # a tie with 1: both kept
        ParetoPoint(5, 70.0, 0.3),  # dominated by 1
    ]
    assert [p.number for p in pareto_front(pts)] == [1, 4, 0]


def test_best_max_latency_picks_the_most_accurate_point_within_it(
    digits_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = build_env(spec(digits_model, latency="measured", latency_repeats=5, action_wall=False))
    cfg = study_config(sampler="motpe", objectives="accuracy,latency", n_trials=6)
    run_study(env=env, config=cfg, run_dir=tmp_path)
    study, _ = load_run_study(tmp_path)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE and t.constraints["budget"] <= 0]
    lat = sorted(t.user_attrs["latency_ms"] for t in done)
    limit = lat[len(lat) // 2]
    out = tmp_path / "fast.yaml"
    assert main(["optuna", "best", str(tmp_path), "--max-latency", str(limit), "--out", str(out)]) == 0
    policy = Policy.load(out)
    within = [t for t in done if t.user_attrs["latency_ms"] <= limit]
    assert policy.metrics["latency_ms"] <= limit
    assert policy.accuracy == max(t.user_attrs["accuracy"] for t in within)
    capsys.readouterr()
    assert main(["optuna", "best", str(tmp_path), "--max-latency", str(lat[0] / 10)]) == 2
    err = capsys.readouterr().err
    assert "no trial meets --max-latency" in err and f"{lat[0]:.4g} ms" in err and len(err.strip().splitlines()) == 1


def test_median_pruner_stops_the_hopeless_trial(digits_model: Path, tmp_path: Path) -> None:
    env = build_env(spec(digits_model, finetune_steps=20))
    names = env.group_names
    mild = dict.fromkeys(names, 0.0)  # the action wall raises the later groups just enough for the budget
    hopeless = dict.fromkeys(names, 0.8)  # ~4% of the MACs left
    cfg = study_config(n_trials=2, pruner_startup_trials=1)
    summary = run_study(env=env, config=cfg, run_dir=tmp_path, enqueue=[mild, hopeless])
    t0, t1 = trials_of(tmp_path)
    assert t0.state == TrialState.COMPLETE and sorted(t0.intermediate_values) == [0, 10]
    assert t1.state == TrialState.PRUNED and t1.last_step == 0
    assert t1.intermediate_values[0] < t0.intermediate_values[0]
    assert summary.complete == 1 and summary.pruned == 1
    rec = read_jsonl(tmp_path / "episodes.jsonl")[1]
    assert rec["trial_state"] == "PRUNED" and rec["reward"] is None and rec["pruned_step"] == 0
    assert rec["policy"] == pytest.approx(hopeless)


def test_rerun_continues_to_n_trials_and_repairs_the_record(digits_model: Path, tmp_path: Path) -> None:
    env = build_env(spec(digits_model))
    first = run_study(env=env, config=study_config(n_trials=3), run_dir=tmp_path)
    assert first.trials == 3 and first.resumed_from == 0
    # a crash: the last line lost (torn) and a trial left RUNNING by this worker
    path = tmp_path / "episodes.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    study, meta = load_run_study(tmp_path)
    zombie = study.ask()
    zombie.set_user_attr("worker", meta["worker"])
    again = run_study(env=env, config=study_config(n_trials=5), run_dir=tmp_path)
    assert again.resumed_from == 3 and again.trials == 5
    records = read_jsonl(path)
    assert [r["episode"] for r in records] == [0, 1, 2, 4, 5]  # trial 3 was the zombie
    states = [t.state for t in trials_of(tmp_path)]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert json.loads(path.read_text().splitlines()[2])["episode"] == 2  # restored from the study


def test_cli_run_refuses_an_existing_folder_without_resume(digits_model: Path, tmp_path: Path) -> None:
    base = [
        "optuna",
        "run",
        "--model",
        str(digits_model),
        "--data",
        "digits",
        "--val-size",
        "200",
        "--no-tensorboard",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main([*base, "--n-trials", "2"]) == 0
    assert main([*base, "--n-trials", "2"]) == 2
    assert main([*base, "--n-trials", "3", "--resume"]) == 0
    assert len(read_jsonl(tmp_path / "r" / "episodes.jsonl")) == 3
    cfg = (tmp_path / "r" / "config.yaml").read_text()
    assert "method: optuna" in cfg and "n_trials: 3" in cfg


def test_bad_settings_fail_with_one_line(digits_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown sampler 'cmaes'"):
        StudyConfig(sampler="cmaes")
    with pytest.raises(ConfigError, match="motpe is multi-objective"):
        StudyConfig(sampler="motpe")
    env = build_env(spec(digits_model))
    with pytest.raises(UserError, match="need a latency model"):
        run_study(env=env, config=study_config(objectives="accuracy,latency"), run_dir=tmp_path / "x")
    with pytest.raises(UserError, match=r"storage postgresql://u:\*\*\*@127\.0\.0\.1:1/db") as err:
        run_study(env=env, config=study_config(storage="postgresql://u:secret@127.0.0.1:1/db"), run_dir=tmp_path / "y")
    assert "secret" not in str(err.value) and not (tmp_path / "y" / "study.yaml").exists()
    run_study(env=env, config=study_config(n_trials=1), run_dir=tmp_path / "z")
    with pytest.raises(UserError, match="works for study 'prunegym'"):
        run_study(env=env, config=study_config(n_trials=1, study_name="other"), run_dir=tmp_path / "z")


def test_optuna_dashboard_serves_a_run_on_loopback(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("optuna_dashboard")
    from prunegym.core.checkpoint import save_model
    from prunegym.core.models import build_model
    from prunegym.env.factory import EnvSpec, build_env
    from prunegym.search.optuna_config import StudyConfig
    from prunegym.search.optuna_study import run_study

    model = save_model(tmp_path / "m.pt", model=build_model("smallcnn", in_channels=1))
    env = build_env(EnvSpec.from_options(model=str(model), data="digits", val_size=100, bn_recalib_images=100))
    run_study(env=env, config=StudyConfig(n_trials=2, n_startup_trials=2, tensorboard=False), run_dir=tmp_path / "run")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "prunegym.cli.main", "optuna", "dashboard", str(tmp_path / "run"), "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, body = time.time() + 60, ""
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as resp:
                    body = resp.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert '"study_name"' in body, body[:300]
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_workers_creating_a_new_sqlite_file_together_all_succeed(tmp_path: Path) -> None:
    """Several workers opening one brand-new SQLite file at once race on the schema; none may fail."""
    from storage_helpers import open_storage_together

    for i in range(3):
        assert open_storage_together(f"sqlite:///{tmp_path / f'race{i}.db'}", workers=3) == []
