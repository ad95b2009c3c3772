"""``prunegym ana`` (sensitivity analysis) and the per-group plans of ``prune --ana`` (threshold and rate rules)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from prunegym.cli.main import main
from prunegym.core.checkpoint import load_model
from prunegym.core.models import build_model
from prunegym.core.policy import Policy, PolicyError
from prunegym.core.pruning import CostTable, cost_table, uniform_ratio_for_macs
from prunegym.env.evaluator import Evaluator, EvaluatorConfig
from prunegym.workflow.prune import prune_model
from prunegym.workflow.prune_plan import _plan, envelope, plan_for_rate, plan_for_threshold
from prunegym.workflow.sensitivity import Sensitivity, load_sensitivity, run_sensitivity

DIGITS = (1, 8, 8)
GROUPS = ("features.0", "features.3", "features.7", "features.10")
RATIOS = ("0.25", "0.5", "0.75", "0.98")  # 0.98 leaves no channel of the 32-channel groups: not applicable


@pytest.fixture(scope="module")
def base(digits_model: Path) -> Path:
    return digits_model


@pytest.fixture(scope="module")
def ana(tmp_path_factory, base) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("ana") / "run"
    code, stdout = _cli(
        "ana",
        "--model",
        str(base),
        "--data",
        "digits",
        "--ratios",
        ",".join(RATIOS),
        "--bn-recalib-images",
        "200",
        "--out",
        str(out),
    )
    assert code == 0
    return out, stdout


def _cli(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["--quiet", *argv])
    return code, buf.getvalue()


def test_ana_writes_the_table_csv_json_and_heatmap(ana) -> None:
    out, stdout = ana
    sens = load_sensitivity(out)
    assert sens.groups == GROUPS and sens.ratios == (0.25, 0.5, 0.75, 0.98)
    assert len(sens.accuracy) == 4 and all(len(v) == 4 for v in sens.accuracy.values())
    assert sens.baseline > 90.0  # trained: chance is 10%
    # not applicable where no channel would be left; the 64-channel groups keep one
    assert sens.accuracy["features.0"][3] is None and sens.accuracy["features.3"][3] is None
    assert sens.accuracy["features.7"][3] is not None
    # pruning more hurts more (on average over the groups)
    mean = [sum(sens.accuracy[g][i] for g in GROUPS) / 4 for i in range(3)]
    assert mean[0] > mean[2]
    md = (out / "ana.md").read_text().splitlines()
    assert "| Layer | Baseline | -25% | -50% | -75% | -98% |" in md
    assert sum(line.startswith("| features.") for line in md) == 4
    rows = (out / "ana.csv").read_text().splitlines()
    assert rows[0] == "group,ratio,accuracy,drop,macs,macs_ratio" and len(rows) == 1 + 16
    assert (out / "ana_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "features.10" in stdout and "-75%" in stdout and "15 evaluations computed, 0 reused" in stdout  # 2 cells n/a
    assert len((out / "ana.jsonl").read_text().splitlines()) == 17


def test_ana_resume_skips_finished_cells(tmp_path: Path, base, digits) -> None:
    model = load_model(str(base))
    cfg = EvaluatorConfig(val_size=len(digits.val_y), bn_recalib_images=100)
    evaluator = Evaluator(model=model, data=digits, config=cfg, input_shape=DIGITS)
    calls = []
    inner = evaluator.evaluate

    def counting(ratios, **kw):
        calls.append(dict(ratios))
        return inner(ratios, **kw)

    evaluator.evaluate = counting  # type: ignore[method-assign]
    settings = {"model": "smallcnn", "seed": 0}

    def stop_after_4(done: int, total: int, info: str) -> None:
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sensitivity(
            evaluator=evaluator,
            ratios=(0.25, 0.5),
            out_dir=tmp_path,
            model_name="smallcnn",
            settings=settings,
            progress=stop_after_4,
        )
    assert len(calls) == 4 and len((tmp_path / "ana.jsonl").read_text().splitlines()) == 4
    evaluator._cache.clear()
    calls.clear()
    run = run_sensitivity(
        evaluator=evaluator, ratios=(0.25, 0.5), out_dir=tmp_path, model_name="smallcnn", settings=settings
    )
    assert (run.reused, run.computed, len(calls)) == (4, 5, 5)
    assert {"features.0": 0.25} not in calls and {} not in calls  # the baseline was done before
    # other settings: the old cells do not count
    calls.clear()
    again = run_sensitivity(
        evaluator=evaluator, ratios=(0.25,), out_dir=tmp_path, model_name="smallcnn", settings={**settings, "seed": 1}
    )
    assert again.reused == 0 and len(calls) == 5


# ----------------------------------------------------------------------------------------------- plans


def smallcnn_table() -> CostTable:
    return cost_table(build_model("smallcnn", in_channels=1), input_shape=DIGITS)


def synthetic(drops: dict[str, list[float | None]], ratios=(0.25, 0.5, 0.75)) -> Sensitivity:
    base = 90.0
    acc = {g: tuple(None if d is None else base - d for d in v) for g, v in drops.items()}
    return Sensitivity(
        model="smallcnn",
        baseline=base,
        ratios=ratios,
        groups=tuple(drops),
        accuracy=acc,
        macs={g: (None,) * len(ratios) for g in drops},
        base_macs=1,
        base_params=1,
    )


def test_envelope_is_the_running_worst_loss() -> None:
    sens = synthetic({"features.0": [0.5, -0.2, 3.0], "features.3": [2.0, 1.0, None]})
    assert envelope(sens, "features.0") == ([0.0, 0.25, 0.5, 0.75], [0.0, 0.5, 0.5, 3.0])
    assert envelope(sens, "features.3") == ([0.0, 0.25, 0.5], [0.0, 2.0, 2.0])


def test_threshold_rule_picks_each_groups_largest_safe_analysed_ratio() -> None:
    table = smallcnn_table()
    sens = synthetic(
        {
            "features.0": [0.1, 0.4, 5.0],
            "features.3": [0.2, 2.0, 0.3],  # 0.3 at 75%: noise
            "features.7": [3.0, 4.0, 9.0],
            "features.10": [0.0, 0.0, 0.0],
        }
    )
    plan = plan_for_threshold(sens, table, threshold=0.5)
    assert dict(plan.ratios) == {"features.0": 0.5, "features.3": 0.25, "features.7": 0.0, "features.10": 0.75}
    assert plan.macs == table.predict(plan.ratios)[0]
    assert dict(plan_for_threshold(sens, table, threshold=0.0).ratios)["features.10"] == 0.75
    assert set(plan_for_threshold(sens, table, threshold=100).ratios.values()) == {0.75}


def test_rate_rule_meets_the_mac_budget_and_prunes_insensitive_groups_more() -> None:
    table = smallcnn_table()
    sens = synthetic(
        {
            "features.0": [1.0, 3.0, 8.0],
            "features.3": [0.1, 0.3, 1.0],
            "features.7": [2.0, 6.0, 20.0],
            "features.10": [0.2, 0.5, 2.0],
        }
    )
    for rate in (0.2, 0.5, 0.7):
        plan = plan_for_rate(sens, table, rate=rate)
        macs, _ = table.predict(plan.ratios)
        assert macs == plan.macs <= (1 - rate) * table.macs
        assert macs >= (1 - rate - 0.03) * table.macs  # no grid-step overshoot
        # a slightly lower common threshold misses the budget: the threshold found is the smallest
        assert _plan(sens, table, plan.threshold * 0.99, round_to=1, rule="rate").macs > (1 - rate) * table.macs
        r = plan.ratios
        assert r["features.3"] >= r["features.0"] and r["features.10"] >= r["features.7"]
        for g, n in table.channels.items():  # exact channel fractions
            assert abs(r[g] * n - round(r[g] * n)) < 1e-9
    policy = plan_for_rate(sens, table, rate=0.5).policy(model="smallcnn", input_shape=DIGITS)
    assert policy.source == "ana" and policy.metrics["predicted_macs_ratio"] <= 0.5


def test_rate_rule_errors() -> None:
    table = smallcnn_table()
    sens = synthetic({"features.0": [1.0, 3.0, 8.0], "features.3": [0.1, 0.3, 1.0]}, ratios=(0.1, 0.2, 0.3))
    with pytest.raises(PolicyError, match=r"unreachable .* at most 0\.\d+ of the MACs"):
        plan_for_rate(sens, table, rate=0.6)
    bad = synthetic({"features.O": [1.0, 2.0, 3.0]})
    with pytest.raises(PolicyError, match=r"does not fit this model: .*did you mean .*'features\.0'"):
        plan_for_rate(bad, table, rate=0.1)
    with pytest.raises(PolicyError, match="outside"):
        plan_for_rate(sens, table, rate=float("nan"))


def test_ana_plan_beats_uniform_at_the_same_macs(ana, base, digits) -> None:
    """The acceptance comparison on the tiny model: BN-recalibrated val top-1 at (about) the same MACs."""
    out, _ = ana
    model = load_model(str(base))
    table = cost_table(model, input_shape=DIGITS)
    plan = plan_for_rate(load_sensitivity(out), table, rate=0.5)
    r = uniform_ratio_for_macs(model, input_shape=DIGITS, target_macs_fraction=0.5)
    uniform = Policy.uniform(table.channels, r)
    got = {}
    for name, policy in (("ana", plan.policy()), ("uniform", uniform)):
        res = prune_model(model=model, policy=policy, input_shape=DIGITS, data=digits, bn_recalib_images=200)
        got[name] = res
        assert res.summary.compressed_macs <= 0.5 * res.summary.baseline_macs
    macs = {k: v.summary.compressed_macs / v.summary.baseline_macs for k, v in got.items()}
    assert abs(macs["ana"] - macs["uniform"]) < 0.02, macs
    acc = {k: v.summary.compressed_accuracy for k, v in got.items()}
    assert acc["ana"] >= acc["uniform"], acc
    # the CLI does the same and reports it
    code, stdout = _cli(
        "prune",
        "--model",
        str(base),
        "--data",
        "digits",
        "--ana",
        str(out),
        "--rate",
        "0.5",
        "--bn-recalib-images",
        "200",
        "--out",
        str(out.parent / "prune"),
    )
    assert code == 0 and "ana rate rule" in stdout and "Operations" in stdout
    summary = json.loads((out.parent / "prune" / "summary.json").read_text())
    assert summary["compressed_accuracy"] == pytest.approx(acc["ana"])
