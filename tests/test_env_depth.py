"""Depth actions in the environment: one continuous action per group covers width and block removal."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from prunegym.core.models import build_model
from prunegym.core.policy import Policy
from prunegym.core.pruning import RemovedBlock, apply_policy
from prunegym.core.stats import model_stats
from prunegym.env import EnvSpec, build_env


@pytest.fixture(scope="module")
def resnet_digits(tmp_path_factory) -> Path:
    """A ResNet-20 for 8×8 digits (one input channel), briefly trained, saved as a prunegym model."""
    import torch

    from prunegym.core.checkpoint import save_model
    from prunegym.core.data import load_data
    from prunegym.core.train import TrainConfig, train

    out = tmp_path_factory.mktemp("r20-digits")
    data = load_data("digits")
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, in_channels=1)  # normalized by the data's own statistics
    cfg = TrainConfig(model="resnet20", data="digits", out=str(out), epochs=3, batch_size=64, lr=0.05, eval_test=False)
    train(config=cfg, model=model, data=data, run_dir=out)
    return save_model(out / "model.pt", model=model, extra={"input_shape": [1, 8, 8]})


def _spec(model: Path, **kw) -> EnvSpec:
    return EnvSpec.from_options(model=str(model), data="digits", val_size=280, bn_recalib_images=200, **kw)


def test_the_depth_env_passes_both_env_checkers(resnet_digits: Path) -> None:
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = build_env(_spec(resnet_digits, target_ratio=0.6))
    assert env.num_groups == 12 and len(env.blocks) == 7  # 9 inner + 3 residual-stream groups; 7 identity blocks
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)


def test_the_top_of_a_block_groups_action_range_removes_the_block(resnet_digits: Path) -> None:
    env = build_env(_spec(resnet_digits, target_ratio=0.9))
    block_group = next(iter(env.blocks))
    assert env.action_to_decision(1.0, block_group) == (0.8, True)
    assert env.action_to_decision(0.59, block_group)[1] is False
    assert env.action_to_decision(0.61, block_group)[1] is True  # top 20% of [-1, 1]
    assert env.action_to_decision(1.0, "conv1") == (0.8, False)  # a stream group has no block to remove
    ratio, remove = env.action_to_decision(0.2, block_group)
    assert env.action_of(ratio, remove=remove, group=block_group) == pytest.approx(0.2)
    env.reset(seed=0)
    info: dict = {}
    for name in env.group_names:
        action = 1.0 if name in env.blocks else -1.0
        *_, info = env.step(np.array([action], dtype=np.float32))
    assert sorted(info["removed"]) == sorted(env.blocks.values())
    policy = env.policy_from_info(info, source="test")
    assert set(policy.removed) == set(env.blocks.values())
    pruned = apply_policy(env.evaluator.model, policy, input_shape=(1, 8, 8))
    assert sum(isinstance(m, RemovedBlock) for m in pruned.modules()) == 7
    assert info["macs"] == model_stats(pruned, input_shape=(1, 8, 8)).macs
    loaded = Policy.from_dict(policy.to_dict())
    assert loaded.removed == policy.removed


def test_the_action_wall_removes_a_block_when_width_alone_cannot_keep_the_budget(resnet_digits: Path) -> None:
    env = build_env(_spec(resnet_digits, target_ratio=0.3))
    env.reset(seed=0)
    info: dict = {}
    for _ in env.group_names:
        *_, info = env.step(np.array([-1.0], dtype=np.float32))  # ask to prune nothing, every step
    assert info["macs_ratio"] <= 0.3 + 1e-9
    assert info["removed"]  # the budget is out of reach with channels alone at max_ratio 0.8 on the later groups


def test_without_depth_no_block_is_removed(resnet_digits: Path) -> None:
    env = build_env(_spec(resnet_digits, target_ratio=0.9, depth=False))
    assert env.blocks == {}
    env.reset(seed=0)
    info: dict = {}
    for _ in env.group_names:
        *_, info = env.step(np.array([1.0], dtype=np.float32))
    assert info["removed"] == []


def test_optuna_and_random_search_record_removed_blocks(resnet_digits: Path, tmp_path: Path) -> None:
    from prunegym.agents.runner import run_search
    from prunegym.agents.search_config import SearchConfig
    from prunegym.search.optuna_config import StudyConfig
    from prunegym.search.optuna_study import run_study

    env = build_env(_spec(resnet_digits, target_ratio=0.7))
    removal = Policy(ratios={}, removed=tuple(env.blocks.values())[:3])
    config = StudyConfig(n_trials=4, seed=0, tensorboard=False)
    run_study(env=env, config=config, run_dir=tmp_path / "optuna", enqueue=[removal])
    records = [line for line in (tmp_path / "optuna" / "episodes.jsonl").read_text().splitlines() if line]
    assert len(records) == 4 and '"removed": ["layer1.0", "layer1.1", "layer1.2"]' in records[0]
    run_search(env=env, config=SearchConfig(agent="random", episodes=3, tensorboard=False), run_dir=tmp_path / "rs")
    best = Policy.load(tmp_path / "rs" / "best_policy.yaml")
    assert isinstance(best.removed, tuple)


def test_a_depth_latency_table_predicts_removed_blocks_and_keeps_a_latency_budget(
    resnet_digits: Path, tmp_path: Path
) -> None:
    from prunegym.core.checkpoint import load_model
    from prunegym.core.onnxrt import LatencyConfig
    from prunegym.env.latency import PredictedLatency, TableBuildConfig, build_latency_table

    model = load_model(str(resnet_digits))
    config = TableBuildConfig(
        grid_step=8, repeats=4, rounds=2, warmup=1, chunk=32, calib_policies=8, calib_repeats=8, calib_rounds=2
    )
    out = tmp_path / "r20-digits.json"
    table = build_latency_table(
        model=model, input_shape=(1, 8, 8), config=config, latency=LatencyConfig(), out=out, source={}
    )
    assert len(table.search["blocks"]) == 7
    pred = PredictedLatency(table=table)
    blocks = list(pred.blocks)
    fewer = pred.predict({}, removed=blocks[:3])
    fewest = pred.predict({}, removed=blocks)
    assert fewest < fewer < pred.baseline_ms  # the monotone mode: removing more never predicts more time
    assert pred.predict({pred.blocks[blocks[0]]: 1.0}) == pred.predict({}, removed=blocks[:1])
    env = build_env(
        _spec(resnet_digits, latency="predicted", latency_table=str(out), target="latency", target_ratio=0.6)
    )
    assert len(env.blocks) == 7
    env.reset(seed=0)
    info: dict = {}
    for _ in env.group_names:
        *_, info = env.step(np.array([-1.0], dtype=np.float32))
    assert info["latency_ratio"] <= 0.6 + 1e-9
    assert info["latency_ms"] == pytest.approx(pred.predict(info["policy"], removed=info["removed"]), rel=1e-4)


def test_ana_has_a_remove_column_for_every_removable_block(resnet_digits: Path, tmp_path: Path) -> None:
    from prunegym.workflow.sensitivity import Sensitivity, markdown_table, run_sensitivity

    env = build_env(_spec(resnet_digits))
    run = run_sensitivity(evaluator=env.evaluator, ratios=(0.5,), out_dir=tmp_path, model_name="r20", settings={})
    result = run.result
    assert len(result.removal) == 7 and all(0.0 <= a <= 100.0 for a in result.removal.values())
    assert "| Layer | Baseline | -50% | Remove |" in markdown_table(result)
    assert Sensitivity.from_dict(result.to_dict()).removal == result.removal
    again = run_sensitivity(evaluator=env.evaluator, ratios=(0.5,), out_dir=tmp_path, model_name="r20", settings={})
    assert again.computed == 0 and again.result.removal == result.removal  # resumed from ana.jsonl


def test_a_removed_block_policy_replays_to_a_bundle_that_deploy_run_serves(
    resnet_digits: Path, tmp_path: Path, capsys
) -> None:
    import onnx
    from PIL import Image

    from prunegym.cli.main import main
    from prunegym.core.data import load_data
    from prunegym.deploy.replay import run_replay
    from prunegym.deploy.replay_config import ReplayConfig

    policy = Policy(
        ratios={"conv1": 0.25, "layer3.0.conv2": 0.5},
        removed=("layer1.1", "layer1.2", "layer2.2", "layer3.1", "layer3.2"),
        model="resnet20",
    )
    policy.save(tmp_path / "policy.yaml")
    config = ReplayConfig(
        policy=str(tmp_path / "policy.yaml"),
        model=str(resnet_digits),
        data="digits",
        out=str(tmp_path / "replay"),
        epochs=1,
        calib_images=64,
        bench_threads=(1,),
        bench_repeats=10,
        bench_rounds=2,
        bench_batch=8,
    )
    _, results = run_replay(config)
    bundle = results["bundle"]
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(bundle / "model.onnx")).graph.node)
    assert convs == 1 + 18 - 2 * 5 + 2  # stem + 18 block convs, less 2 per removed block, + 2 rewritten shortcuts
    report = (bundle / "report.json").read_text()
    assert '"removed": [' in report and "realization" in report
    img = tmp_path / "digit.png"
    Image.fromarray(load_data("digits").test_x[0, 0].numpy()).save(img)
    assert main(["deploy", "run", str(bundle), str(img), "--json"]) == 0
    assert '"label"' in capsys.readouterr().out
    assert main(["stat", "--model", str(tmp_path / "replay" / "model.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed_blocks"] == list(policy.removed)
