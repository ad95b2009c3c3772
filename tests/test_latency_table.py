"""Predicted latency: the per-layer lookup table, its identity checks, the env hook, resume and the CLI."""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from prunegym.core.data import DataSplits
from prunegym.core.errors import UserError
from prunegym.core.models import SmallCNN, build_model
from prunegym.core.onnxrt import LatencyConfig, resolve_clock
from prunegym.core.pruning import kept_channels
from prunegym.env import EnvSpec, build_env
from prunegym.env.evaluator import Evaluator, EvaluatorConfig
from prunegym.env.latency import (
    LatencyTable,
    PredictedLatency,
    TableBuildConfig,
    build_latency_table,
    check_latency_table,
    group_counts,
    measure_model_latency,
    plot_check,
)

SHAPE = (1, 8, 8)
# a coarse grid and few runs: the tests check the machinery, the ResNet-56 acceptance checks the accuracy
FAST = TableBuildConfig(
    round_to=1, grid_step=8, repeats=30, rounds=3, warmup=2, calib_policies=3, calib_repeats=60, calib_rounds=4
)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_model("smallcnn", num_classes=10, in_channels=1).eval()


@pytest.fixture(scope="module")
def table_path(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("latency") / "smallcnn-cpu-1t.json"
    build_latency_table(
        model=model,
        input_shape=SHAPE,
        config=FAST,
        latency=LatencyConfig(),
        out=out,
        source={"model": "smallcnn", "data": "digits"},
    )
    return out


@pytest.fixture(scope="module")
def evaluator(model: torch.nn.Module, digits: DataSplits) -> Evaluator:
    return Evaluator(model=model, data=digits, config=EvaluatorConfig(val_size=100), input_shape=SHAPE)


def test_group_counts_are_exactly_the_counts_kept_channels_reaches() -> None:
    for n, round_to in ((16, 1), (64, 1), (32, 8), (10, 4)):
        sweep = {kept_channels(n, r, round_to) for r in np.linspace(0.0, 0.8, 4001)}
        assert set(group_counts(n, round_to=round_to, max_ratio=0.8)) == sweep
    assert len(group_counts(64, round_to=1, max_ratio=0.8)) == 53
    with pytest.raises(UserError, match="leaves no channel"):
        group_counts(4, round_to=1, max_ratio=0.9, name="g")


def test_table_round_trips_and_records_model_and_device(table_path: Path) -> None:
    raw = json.loads(table_path.read_text())
    assert raw["format"] == "prunegym-latency-table"
    assert {"name", "arch_hash", "input_shape"} <= set(raw["model"])
    assert raw["model"]["name"] == "smallcnn" and raw["model"]["input_shape"] == list(SHAPE)
    assert {"provider", "threads", "batch_size", "onnxruntime", "cpu"} <= set(raw["device"])
    assert raw["device"]["provider"] == "CPUExecutionProvider" and raw["device"]["threads"] == 1
    assert raw["search"]["round_to"] == 1 and raw["search"]["max_ratio"] == 0.8 and raw["created"]
    cal = raw["calibration"]
    assert cal["policies"] == 3 and cal["default"] == "monotone" and cal["monotone"]["slope"] > 0
    assert {"intercept", "r2", "mape_pct"} <= set(cal["aligned"]) and len(cal["points"]) == 3
    assert not table_path.with_name(f"{table_path.stem}.partial.json").exists()  # removed once complete
    assert len(raw["layers"]) == 5  # 4 convs + the classifier
    table = LatencyTable.read(table_path)
    assert table.to_dict() == LatencyTable.from_dict(json.loads(json.dumps(table.to_dict()))).to_dict()
    a, b = PredictedLatency(table=table), PredictedLatency(table=LatencyTable.read(table_path))
    policy = {g: 0.3 for g in table.groups}
    assert a.predict(policy) == b.predict(policy) > 0
    assert a.needs_model is False and a.mode == "monotone"
    aligned = PredictedLatency(table=table, mode="aligned")
    assert aligned.mode == "aligned" and 0 < aligned.predict(policy) < 1.0 and aligned.baseline_ms > 0
    with pytest.raises(UserError, match="unknown latency table mode"):
        PredictedLatency(table=table, mode="fastest")


def test_prediction_is_monotone_in_a_uniform_ratio_and_fast(table_path: Path) -> None:
    pred = PredictedLatency(table=LatencyTable.read(table_path))
    values = [pred.predict(dict.fromkeys(pred.group_order, r)) for r in np.linspace(0.0, 0.8, 33)]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(values)), values
    assert values[-1] < values[0]
    kept = pred.kept(dict.fromkeys(pred.group_order, 0.37))
    start = time.perf_counter()
    for _i in range(200):
        pred.raw_kept(kept)  # uncached: the full per-layer lookup
    assert (time.perf_counter() - start) / 200 < 2e-3


def test_unpruned_prediction_is_the_measured_latency_order_of_magnitude(
    model: torch.nn.Module, table_path: Path
) -> None:
    """A sanity bound only: this model runs in ~0.03 ms, where a shared CPU's noise alone reaches ±30%.
    The predictor's accuracy is a benchmark (BENCHMARKS.md: MAPE 2% on 50 ResNet-56 policies), not a timed test."""
    pred = PredictedLatency(table=LatencyTable.read(table_path))
    measured = measure_model_latency(model, input_shape=SHAPE, config=LatencyConfig(warmup=20, repeats=300)).median_ms
    assert 0.5 < pred.baseline_ms / measured < 2.0, (pred.baseline_ms, measured)


def test_table_for_another_model_or_device_is_a_one_line_user_error(
    table_path: Path, evaluator: Evaluator, tmp_path: Path
) -> None:
    pred = PredictedLatency.load(table_path, evaluator=evaluator, provider="cpu", threads=1)
    assert pred.group_order == evaluator.group_names
    cases = []
    other = SmallCNN(in_channels=1, width=16).eval()
    other_eval = Evaluator(model=other, data=evaluator.data, config=EvaluatorConfig(val_size=100), input_shape=SHAPE)
    with pytest.raises(UserError, match="built for model smallcnn") as exc:
        PredictedLatency.load(table_path, evaluator=other_eval, provider="cpu", threads=1)
    cases.append(exc)
    with pytest.raises(UserError, match="threads 1 ≠ 2") as exc:
        PredictedLatency.load(table_path, evaluator=evaluator, provider="cpu", threads=2)
    cases.append(exc)
    raw = json.loads(table_path.read_text())
    raw["device"]["cpu"] = "Some Other CPU @ 1 GHz"
    moved = tmp_path / "other-device.json"
    moved.write_text(json.dumps(raw))
    with pytest.raises(UserError, match="cpu 'Some Other CPU") as exc:
        PredictedLatency.load(moved, evaluator=evaluator, provider="cpu", threads=1)
    cases.append(exc)
    (tmp_path / "junk.json").write_text('{"format": "something else"}')
    with pytest.raises(UserError, match="not a prunegym latency table") as exc:
        PredictedLatency.load(tmp_path / "junk.json", evaluator=evaluator)
    cases.append(exc)
    with pytest.raises(UserError, match="not found") as exc:
        PredictedLatency.load(tmp_path / "missing.json", evaluator=evaluator)
    cases.append(exc)
    for exc in cases:
        message = str(exc.value)
        assert "\n" not in message and "prunegym latency build" in message, message
    with pytest.raises(UserError, match="--clock wall"):
        resolve_clock("cpu", config=LatencyConfig(intra_op_threads=2))


def test_build_env_with_predicted_latency_reports_the_table_prediction(table_path: Path) -> None:
    spec = EnvSpec.from_options(
        model="smallcnn",
        data="digits",
        val_size=280,
        bn_recalib_images=100,
        latency="predicted",
        latency_table=str(table_path),
        reward="latency_soft",
    )
    env = build_env(spec)
    assert isinstance(env.latency, PredictedLatency) and env.latency.needs_model is False
    env.reset(seed=0)
    info: dict = {}
    for a in (0.5, -0.3, 0.9, 0.1):
        _, _, terminated, _, info = env.step(np.array([a], dtype=np.float32))
    assert terminated
    pred = PredictedLatency(table=LatencyTable.read(table_path))
    assert info["latency_ms"] == pytest.approx(pred.predict(info["policy"]), rel=1e-12)
    kept = env.evaluator.kept(info["policy"])
    assert info["latency_ms"] == env.latency.latency_ms(model=None, ratios=info["policy"], kept=kept)
    assert info["latency_ratio"] == pytest.approx(info["latency_ms"] / env.latency.baseline_ms)


def test_interrupted_build_resumes_from_its_partial_file(model: torch.nn.Module, tmp_path: Path) -> None:
    cfg = TableBuildConfig(
        grid_step=16, repeats=6, rounds=2, warmup=1, chunk=4, calib_policies=0, calib_repeats=6, calib_rounds=2
    )
    out = tmp_path / "t.json"
    seen: list[tuple[str, int, int]] = []

    def stop_after_first_chunk(stage: str, done: int, total: int) -> None:
        seen.append((stage, done, total))
        if stage == "layers" and done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_latency_table(
            model=model,
            input_shape=SHAPE,
            config=cfg,
            latency=LatencyConfig(),
            out=out,
            progress=stop_after_first_chunk,
        )
    partial = tmp_path / "t.partial.json"
    assert partial.exists() and not out.exists()
    resumed: list[tuple[str, int, int]] = []
    build_latency_table(
        model=model,
        input_shape=SHAPE,
        config=cfg,
        latency=LatencyConfig(),
        out=out,
        progress=lambda s, d, n: resumed.append((s, d, n)),
    )
    layers = [x for x in resumed if x[0] == "layers"]
    assert layers[0] == ("layers", 4, next(x for x in seen if x[0] == "layers")[2])  # the first chunk is not redone
    assert out.exists() and not partial.exists()
    assert LatencyTable.read(out).calibration["monotone"]["method"] == "offset"  # one calibration model


def test_check_reports_errors_noise_and_a_plot(model: torch.nn.Module, table_path: Path, tmp_path: Path) -> None:
    pred = PredictedLatency(table=LatencyTable.read(table_path))
    check = check_latency_table(
        predictor=pred, model=model, input_shape=SHAPE, policies=5, seed=3, rounds=3, repeats=30
    )
    assert check.clock == "cpu" and set(check.metrics) == {"cpu", "wall"}
    assert set(check.modes) == {"monotone", "aligned"} and check.mode == "monotone"
    for m in check.metrics.values():
        assert np.isfinite([m["mape_pct"], m["spearman"], m["max_abs_error_ms"], m["noise_pct"]]).all()
    assert len(check.round_ms["cpu"][0]) == 3 and check.runs_per_round == 10
    assert check.to_dict()["rows"][0]["predicted_ms"] > 0
    png = plot_check(check, tmp_path / "check.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_build_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prunegym.cli import latency as latency_commands

    parser = argparse.ArgumentParser()
    latency_commands.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli.json"
    args = parser.parse_args(
        [
            "latency",
            "build",
            "--model",
            "smallcnn",
            "--data",
            "digits",
            "--grid-step",
            "16",
            "--repeats",
            "10",
            "--rounds",
            "2",
            "--calib-policies",
            "3",
            "--calib-repeats",
            "20",
            "--calib-rounds",
            "2",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layers"] == 5 and summary["device"]["threads"] == 1 and out.exists()
    args = parser.parse_args(
        [
            "latency",
            "check",
            "--latency-table",
            str(out),
            "--policies",
            "4",
            "--rounds",
            "2",
            "--repeats",
            "10",
            "--json",
        ]
    )
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["policies"] == 4 and {"cpu", "wall"} == set(report["metrics"])
    assert report["metrics"]["cpu"]["ratio_mape_pct"] >= 0.0 and "ratio_mape_pct" in report["modes"]["monotone"]
    assert Path(report["plot"]).exists()


def test_a_latency_budget_episode_keeps_its_predicted_latency_within_the_budget(table_path: Path) -> None:
    options = {
        "model": "smallcnn",
        "data": "digits",
        "val_size": 280,
        "bn_recalib_images": 100,
        "latency": "predicted",
        "latency_table": str(table_path),
        "target": "latency",
    }
    # the budget comes from the table this machine profiled: a tiny model's floor (every group at max_ratio)
    # is set by per-operator costs and moves with the machine and its load (0.692 here, 0.701 on a CI run)
    pred = PredictedLatency(table=LatencyTable.read(table_path))
    floor = pred.predict(dict.fromkeys(pred.group_order, 0.8)) / pred.baseline_ms
    assert floor < 0.97, f"the table leaves nothing to prune (floor {floor:.3f})"
    budget = floor + 0.5 * (1.0 - floor)
    env = build_env(EnvSpec.from_options(**options, target_ratio=budget))
    for actions in ([-1.0] * env.num_groups, [0.3, -1.0, -0.5, -1.0]):
        env.reset(seed=0)
        info: dict = {}
        for a in actions:
            *_, info = env.step(np.array([a], dtype=np.float32))
        assert info["latency_ratio"] <= budget + 1e-9  # the wall, computed on the table, keeps the budget
        if actions[0] == -1.0:  # asked for nothing: the wall takes about what the budget needs, not everything
            assert info["latency_ratio"] > floor + 0.25 * (budget - floor), (info["latency_ratio"], floor, budget)
    with pytest.raises(UserError, match="unreachable"):
        build_env(EnvSpec.from_options(**options, target_ratio=floor * 0.9))


def test_round_to_defaults_to_the_block_this_device_rewards(model: torch.nn.Module, tmp_path: Path) -> None:
    from dataclasses import replace

    from prunegym.env.factory import LatencySpec, default_round_to
    from prunegym.env.latency import nchwc_block

    block = nchwc_block("CPUExecutionProvider")  # 8 with AVX2, 16 with AVX-512
    table = build_latency_table(
        model=model,
        input_shape=SHAPE,
        config=replace(FAST, round_to=None, calib_policies=1),
        latency=LatencyConfig(),
        out=tmp_path / "t.json",
        source={},
    )
    assert table.search["round_to"] == block
    assert default_round_to(LatencySpec(latency="predicted", latency_table=str(tmp_path / "t.json"))) == block
    assert default_round_to(LatencySpec(latency="measured")) == block
    assert default_round_to(LatencySpec()) == 1


def test_the_calibration_fits_a_curve_and_a_cost_per_removed_block_only_where_the_points_carry_them() -> None:
    from prunegym.env.latency.calibration import fit_line, fit_two

    rng = np.random.default_rng(0)
    x = rng.uniform(1.0, 4.0, 16)
    removed = rng.integers(0, 14, 16).astype(float)
    y = -0.3 + 0.8 * x + 0.05 * x**2 + 0.012 * removed
    fit = fit_line(x, y, removed=removed)
    assert fit["method"] == "linear" and fit["mape_pct"] < 1e-6
    assert (fit["intercept"], fit["slope"], fit["curve"], fit["block_ms"]) == pytest.approx((-0.3, 0.8, 0.05, 0.012))
    assert fit_line(x, y)["block_ms"] == 0.0 and fit_line(x, y)["mape_pct"] > 0.1  # no blocks: not fitted
    three = fit_line(x[:3], y[:3], removed=removed[:3])
    assert three["curve"] == 0.0 and three["block_ms"] == 0.0  # three points carry a line only
    # a cost per removed block larger than 5 % of the slowest model is not believed: fitted without it
    big = y + 0.5 * removed
    assert fit_line(x, big, removed=removed)["block_ms"] == 0.0
    # the two-slope mode falls back to one line when the "other" layers barely vary
    two = fit_two(x, np.full(16, 0.03), y + 0.03 * 0.8, removed=removed)
    assert two["method"] == "linear" and two["block_ms"] == pytest.approx(0.012, abs=1e-3)
