"""Two Optuna workers share one study on a real PostgreSQL server: every trial lands once, none is lost.

Needs ``PRUNEGYM_TEST_POSTGRES_URL`` (``eval "$(bash .ci/postgres.sh start)"`` sets it). Without it the test skips,
except under CI (``CI`` set), where a missing server is a failure: CI must exercise the real distributed storage.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState
from server_helpers import server_url_or_skip
from storage_helpers import open_storage_together

from prunegym.core.checkpoint import save_model
from prunegym.core.data import load_data
from prunegym.core.io import read_jsonl
from prunegym.core.models import build_model
from prunegym.core.train import TrainConfig, train

K = 4  # trials per worker


@pytest.fixture(scope="module")
def postgres_url() -> str:
    return server_url_or_skip(
        "PRUNEGYM_TEST_POSTGRES_URL", start="bash .ci/postgres.sh start", what="the PostgreSQL test"
    )


@pytest.fixture(scope="module")
def digits_model(postgres_url: str, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    data = load_data("digits")
    torch.manual_seed(0)
    model = build_model("smallcnn", in_channels=1)
    cfg = TrainConfig(model="smallcnn", data="digits", out=str(out), epochs=2, batch_size=64, lr=0.05, eval_test=False)
    train(config=cfg, model=model, data=data, run_dir=out)
    return save_model(out / "model.pt", model=model)


def worker_args(*, model: Path, url: str, study: str, out: Path, n_trials: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "prunegym.cli.main",
        "--quiet",
        "optuna",
        "run",
        "--model",
        str(model),
        "--data",
        "digits",
        "--val-size",
        "200",
        "--bn-recalib-images",
        "200",
        "--n-trials",
        str(n_trials),
        "--n-startup-trials",
        "2",
        "--storage",
        url,
        "--study",
        study,
        "--out",
        str(out),
        "--no-tensorboard",
    ]


def test_two_workers_share_one_study_without_losing_or_duplicating_trials(
    postgres_url: str, digits_model: Path, tmp_path: Path
) -> None:
    study_name = f"test-{uuid.uuid4().hex[:8]}"
    outs = [tmp_path / "w0", tmp_path / "w1"]
    procs = [
        subprocess.Popen(
            worker_args(model=digits_model, url=postgres_url, study=study_name, out=o, n_trials=K),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for o in outs
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    try:
        study = optuna.load_study(study_name=study_name, storage=postgres_url)
        trials = study.get_trials(deepcopy=False)
        # every trial of both workers landed once: numbers 0..2K-1, all complete
        assert sorted(t.number for t in trials) == list(range(2 * K))
        assert [t.state for t in trials] == [TrialState.COMPLETE] * (2 * K)
        # the workers sampled with their own seeds: no point was drawn twice
        assert len({tuple(sorted(t.params.items())) for t in trials}) == 2 * K
        workers = [yaml.safe_load((o / "study.yaml").read_text())["worker"] for o in outs]
        assert workers[0] != workers[1]
        numbers = []
        for out, worker in zip(outs, workers, strict=True):
            records = read_jsonl(out / "episodes.jsonl")
            mine = {t.number: t for t in trials if t.user_attrs["worker"] == worker}
            assert len(records) == K and sorted(r["episode"] for r in records) == sorted(mine)
            for r in records:
                assert r["reward"] == mine[r["episode"]].value
                assert r["policy"] == mine[r["episode"]].user_attrs["policy"]["ratios"]
            numbers += [r["episode"] for r in records]
            stored = yaml.safe_load((out / "study.yaml").read_text())["storage"]
            assert "***" in stored or "@" not in stored  # the password never reaches the run folder
        assert sorted(numbers) == list(range(2 * K))  # disjoint, and together they cover the study
        # a worker rerun continues its own share: one more trial, numbered after the others
        rerun = worker_args(model=digits_model, url=postgres_url, study=study_name, out=outs[0], n_trials=K + 1)
        done = subprocess.run([*rerun, "--resume"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert [r["episode"] for r in read_jsonl(outs[0] / "episodes.jsonl")][-1] == 2 * K
        assert len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) == 2 * K + 1
    finally:
        optuna.delete_study(study_name=study_name, storage=postgres_url)


def test_workers_creating_a_new_storage_together_all_succeed(postgres_url: str) -> None:
    """Several workers opening a brand-new database at once race on Optuna's CREATE TABLE; none may fail."""
    import psycopg

    for _ in range(3):
        schema = f"race_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        assert open_storage_together(f"{postgres_url}?options=-csearch_path%3D{schema}", workers=4) == []


def test_a_killed_workers_running_trial_is_failed_by_the_heartbeat_and_run_again(
    postgres_url: str, digits_model: Path, tmp_path: Path
) -> None:
    """kill -9 a worker mid-trial: the next worker marks its RUNNING trial FAIL once the heartbeat's grace period
    is over and runs those parameters again; nothing stays RUNNING."""
    import time

    study = f"beat-{uuid.uuid4().hex[:8]}"
    slow = ["--finetune-steps", "400", "--heartbeat", "1"]  # trials of seconds, a heartbeat every second
    args = worker_args(model=digits_model, url=postgres_url, study=study, out=tmp_path / "w1", n_trials=3)
    victim = subprocess.Popen([*args, *slow], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    storage = optuna.storages.RDBStorage(postgres_url)
    deadline = time.time() + 180
    running = []
    while time.time() < deadline and not running:
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
        except KeyError:
            continue
        running = [t for t in trials if t.state == TrialState.RUNNING and t.number >= 1 and t.params]
    time.sleep(1.0)  # let it finish suggesting its parameters: the trial is then in its finetune
    victim.kill()
    victim.wait(timeout=30)
    assert running, "the first worker never had a trial running"
    time.sleep(4)  # past the grace period (3 heartbeats)
    args = worker_args(model=digits_model, url=postgres_url, study=study, out=tmp_path / "w2", n_trials=2)
    done = subprocess.run([*args, *slow], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    killed = next(t for t in trials if t.number == running[0].number)
    assert killed.state == TrialState.FAIL
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    retried = [
        t for t in trials if t.number > killed.number and all(t.params.get(k) == v for k, v in killed.params.items())
    ]
    assert retried, "the failed trial's parameters were not run again"
