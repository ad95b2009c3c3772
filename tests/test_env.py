"""PruningEnv: Gymnasium/SB3 contract, determinism, action wall, budgets, vector envs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from prunegym.core.errors import UserError
from prunegym.env import EnvSpec, build_env, make_env_fn


def spec(model: Path, **kw) -> EnvSpec:
    return EnvSpec.from_options(model=str(model), data="digits", val_size=280, bn_recalib_images=200, **kw)


def rollout(env, actions, seed=0):
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(np.array([a], dtype=np.float32))
        trace.append((obs, reward, terminated, truncated, {k: v for k, v in info.items() if k != "seconds"}))
    return trace


def test_env_passes_gymnasium_and_sb3_checkers_without_warnings(digits_model: Path) -> None:
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    env = build_env(spec(digits_model))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check(env, skip_render_check=True)
        sb3_check(env, warn=True)


def test_same_seed_and_actions_give_identical_trajectories(digits_model: Path) -> None:
    actions = [0.3, -0.5, 0.9, -0.2]
    a = rollout(build_env(spec(digits_model)), actions)
    b = rollout(build_env(spec(digits_model)), actions)
    assert np.array_equal(a[0], b[0])
    for (o1, r1, t1, _, i1), (o2, r2, t2, _, i2) in zip(a[1:], b[1:], strict=True):
        assert np.array_equal(o1, o2) and r1 == r2 and t1 == t2 and i1 == i2
    final = a[-1]
    assert final[2] is True and final[1] == pytest.approx(final[4]["accuracy"] / 100.0)
    assert 40.0 < final[4]["accuracy"] <= 100.0  # far above chance (10%): a trained model, BN re-calibrated


def test_observation_is_amc_features(digits_model: Path) -> None:
    env = build_env(spec(digits_model))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (11,) and obs.dtype == np.float32
    assert obs[0] == 0.0 and obs[7] == 0.0 and obs[9] == 0.0  # first group, nothing reduced, no previous action
    assert obs[10] == 0.0  # a plain CNN: no residual block to remove
    obs, *_ = env.step(np.array([1.0], dtype=np.float32))  # max ratio on the first group
    assert obs[0] == pytest.approx(1 / 3)  # index 1 of 4, min-max normalized
    assert obs[7] > 0.0 and obs[9] == pytest.approx(0.8)


def test_action_wall_keeps_the_macs_budget_even_for_all_zero_actions(digits_model: Path) -> None:
    env = build_env(spec(digits_model, target_ratio=0.5))
    info = rollout(env, [-1.0] * env.num_groups)[-1][4]
    assert info["macs_ratio"] <= 0.5 + 1e-9
    assert info["macs_ratio"] > 0.45  # the wall takes no more than it must
    no_wall = build_env(spec(digits_model, target_ratio=0.5, action_wall=False))
    assert rollout(no_wall, [-1.0] * env.num_groups)[-1][4]["macs_ratio"] == 1.0


def test_cache_and_accuracy_guaranteed_reward(digits_model: Path) -> None:
    env = build_env(spec(digits_model, reward="acc_flops", target_ratio=1.0))
    first = rollout(env, [0.0] * env.num_groups)[-1]
    again = rollout(env, [0.0] * env.num_groups)[-1]
    assert again[4]["cached"] and not first[4]["cached"] and again[1] == first[1]
    info = first[4]
    assert first[1] == pytest.approx(-(1 - info["accuracy"] / 100) * np.log(info["macs"]))


def test_bad_budgets_fail_before_any_episode(digits_model: Path) -> None:
    with pytest.raises(
        UserError, match=r"unreachable: even max_ratio 0.3 on every group keeps 0.475 \(short by 0.275\)"
    ):
        build_env(spec(digits_model, target_ratio=0.2, max_ratio=0.3))
    with pytest.raises(UserError, match="min_ratio ≤ max_ratio"):
        build_env(spec(digits_model, min_ratio=0.6, max_ratio=0.5))
    with pytest.raises(UserError, match="needs a latency model"):
        build_env(spec(digits_model, reward="latency_soft"))


def test_measured_latency_in_info(digits_model: Path) -> None:
    env = build_env(spec(digits_model, latency="measured", reward="latency_soft", target_ratio=0.7, latency_repeats=10))
    info = rollout(env, [0.5] * env.num_groups)[-1][4]
    assert info["latency_ms"] > 0 and info["latency_ratio"] > 0
    expected = info["accuracy"] / 100 * (info["latency_ms"] / env.target_ms) ** -0.07
    assert info["reward"] == pytest.approx(expected)


@pytest.mark.parametrize("kind", ["dummy", "subproc"])
def test_vector_envs(digits_model: Path, kind: str) -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    fns = [make_env_fn(spec(digits_model)) for _ in range(2)]
    venv = DummyVecEnv(fns) if kind == "dummy" else SubprocVecEnv(fns, start_method="spawn")
    try:
        venv.reset()
        n = venv.get_attr("num_groups")[0]
        for _ in range(n):
            _, rewards, dones, infos = venv.step(np.array([[0.2], [-0.4]], dtype=np.float32))
        assert dones.all() and all(r > 0 for r in rewards)
        assert infos[0]["policy"] != infos[1]["policy"]
    finally:
        venv.close()


def test_env_rollout_cli_prints_accuracy_and_latency_per_episode(digits_model: Path, capsys) -> None:
    import json

    from prunegym.cli.main import main

    code = main(
        [
            "env",
            "rollout",
            "--agent",
            "uniform",
            "--episodes",
            "3",
            "--model",
            str(digits_model),
            "--data",
            "digits",
            "--val-size",
            "200",
            "--target-ratio",
            "1.0",
            "--latency",
            "measured",
            "--latency-repeats",
            "5",
            "--round-to",  # not the CPU's NCHWc block (16 on AVX-512 moved the sweep's end above 0.1 of the MACs)
            "1",
            "--json",
        ]
    )
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["episode"] for r in rows] == [0, 1, 2]
    assert rows[0]["macs_ratio"] == 1.0 and rows[-1]["macs_ratio"] < 0.1  # uniform sweeps min → max ratio
    assert all(r["latency_ms"] > 0 and 0 < r["accuracy"] <= 100 for r in rows)


def test_bn_recalibration_uses_the_training_augmentation(resnet20_weights: Path, cifar10_dir: Path) -> None:
    """The published ResNet-20's BN statistics come from augmented training images: re-estimating them on clean
    images costs ~4 points of test accuracy; with the training augmentation the unpruned model keeps its score."""
    from prunegym.core.checkpoint import load_model
    from prunegym.core.data import load_data
    from prunegym.core.evaluate import evaluate, input_norm, recalibrate_bn

    data = load_data(f"cifar10:{cifar10_dir}", val_size=1000)

    def test_top1(augment: str | None) -> float:
        model = load_model("resnet20", weights=resnet20_weights)
        mean, std = input_norm(model, mean=data.mean, std=data.std)
        if augment is not None:
            recalibrate_bn(model, data.train_x, mean=mean, std=std, num_images=500, augment=augment)
        return evaluate(model, data.test_x, data.test_y, mean=mean, std=std, limit=2000).top1

    as_given, clean, augmented = test_top1(None), test_top1("none"), test_top1(data.augment)
    assert clean < as_given - 2.0
    assert abs(augmented - as_given) < 1.0


def test_a_val_split_the_model_was_trained_on_is_flagged_with_the_fix(
    digits_model, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from prunegym.core.checkpoint import load_model
    from prunegym.core.data import load_data
    from prunegym.env.evaluator import Evaluator, EvaluatorConfig

    data = load_data("digits", val_size=200)
    ev = Evaluator(
        model=load_model(str(digits_model)),
        data=data,
        config=EvaluatorConfig(val_size=200),
        input_shape=data.input_shape,
    )
    with caplog.at_level(logging.WARNING, logger="prunegym.env.evaluator"):
        top1 = ev.check_val_split(threshold=0.0)  # every score counts as "too high" here
    assert 0.0 < top1 <= 100.0 and "--data 'digits?val=test-half'" in caplog.text
    half = load_data("digits?val=test-half")
    ev = Evaluator(
        model=load_model(str(digits_model)),
        data=half,
        config=EvaluatorConfig(val_size=100),
        input_shape=half.input_shape,
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="prunegym.env.evaluator"):
        ev.check_val_split(threshold=0.0)
    assert "test-half" not in caplog.text  # already searching on the test half
