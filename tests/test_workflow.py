"""The DeePhi workflow commands: prune, transform, iterate, finetune of a pruned model, and their bad inputs."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunegym.workflow.iterate as workflow
from prunegym.cli.main import main
from prunegym.core.checkpoint import load_model, read_checkpoint
from prunegym.core.io import write_json
from prunegym.core.policy import Policy
from prunegym.core.pruning import cost_table, uniform_ratio_for_macs
from prunegym.core.pruning.masking import max_abs_diff
from prunegym.core.stats import model_stats
from prunegym.workflow import IterateConfig, iterate_rounds, prune_model, save_pruned
from prunegym.workflow.sensitivity import Sensitivity

DIGITS = (1, 8, 8)
CIFAR = (3, 32, 32)
GROUPS = ("features.0", "features.3", "features.7", "features.10")


@pytest.fixture(scope="module")
def base(digits_model: Path) -> Path:
    return digits_model


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--quiet", *argv])
    return code, out.getvalue(), err.getvalue()


def stat_macs(model: str | Path) -> int:
    code, out, _ = cli("stat", "--model", str(model), "--json")
    assert code == 0
    return json.loads(out)["macs"]


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, base) -> Path:
    out = tmp_path_factory.mktemp("pruned") / "dense"
    code, stdout, _ = cli(
        "prune",
        "--model",
        str(base),
        "--data",
        "digits",
        "--uniform",
        "--rate",
        "0.5",
        "--bn-recalib-images",
        "200",
        "--out",
        str(out),
    )
    assert code == 0, stdout
    for row in ("Accuracy", "Weights", "Operations", "Baseline", "Compressed", "Delta %"):
        assert row in stdout
    return out


# ----------------------------------------------------------------------------------------------- prune


def test_prune_uniform_rate_on_resnet20_cifar(tmp_path: Path, cifar10_dir, resnet20_weights) -> None:
    out = tmp_path / "r20"
    code, _, err = cli(
        "prune",
        "--model",
        "resnet20",
        "--weights",
        str(resnet20_weights),
        "--data",
        f"cifar10:{cifar10_dir}",
        "--uniform",
        "--rate",
        "0.5",
        "--val-size",
        "200",
        "--bn-recalib-images",
        "100",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert (out / "policy.yaml").exists() and Policy.load(out / "policy.yaml").source == "uniform"
    ratio = stat_macs(out) / stat_macs("resnet20")
    assert 0.48 <= ratio <= 0.52, ratio
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline_accuracy"] > 90 and summary["compressed_accuracy"] > 10
    # saving and reloading gives identical outputs (library path, no data: exact)
    model = load_model("resnet20", weights=str(resnet20_weights))
    r = uniform_ratio_for_macs(model, input_shape=CIFAR, target_macs_fraction=0.5)
    res = prune_model(
        model=model, policy=Policy.uniform(cost_table(model, input_shape=CIFAR).channels, r), input_shape=CIFAR
    )
    path = save_pruned(tmp_path / "lib", res)
    assert max_abs_diff(load_model(str(path)), res.model, input_shape=CIFAR) == 0.0
    assert model_stats(load_model(str(path)), input_shape=CIFAR).macs == stat_macs(out)


def test_prune_writes_a_model_that_stat_eval_and_finetune_accept(pruned: Path, base: Path, tmp_path: Path) -> None:
    policy = Policy.load(pruned / "policy.yaml")
    assert set(policy.ratios) == set(GROUPS) and policy.input_shape == DIGITS
    assert policy.metrics["macs_ratio"] <= 0.5
    assert stat_macs(pruned) <= 0.5 * stat_macs(base)
    summary = json.loads((pruned / "summary.json").read_text())
    code, out, _ = cli("eval", "--model", str(pruned), "--data", "digits", "--split", "val", "--json")
    assert code == 0 and json.loads(out)["top1"] == pytest.approx(summary["compressed_accuracy"])
    # finetune a pruned model, distilling from the unpruned one
    ft = tmp_path / "ft"
    code, out, err = cli(
        "finetune",
        "--model",
        str(pruned / "model.pt"),
        "--data",
        "digits",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--max-steps-per-epoch",
        "4",
        "--teacher",
        str(base),
        "--no-eval-test",
        "--out",
        str(ft),
    )
    assert code == 0, err
    assert stat_macs(ft / "best.pt") == stat_macs(pruned)


# ----------------------------------------------------------------------------------------------- transform


def test_transform_of_our_masked_model_is_exact(pruned: Path, base: Path, tmp_path: Path) -> None:
    masked = tmp_path / "masked"
    code, out, err = cli(
        "prune",
        "--model",
        str(base),
        "--data",
        "digits",
        "--uniform",
        "--rate",
        "0.5",
        "--mode",
        "masked",
        "--bn-recalib-images",
        "200",
        "--out",
        str(masked),
    )
    assert code == 0, err
    assert stat_macs(masked) == stat_macs(base)  # shapes unchanged
    dense = tmp_path / "dense"
    code, out, err = cli("transform", "--model", str(masked / "model.pt"), "--data", "digits", "--out", str(dense))
    assert code == 0, err
    assert "max abs output difference" in out and "Operations" in out
    assert json.loads((dense / "summary.json").read_text())["max_abs_diff"] <= 1e-5
    assert max_abs_diff(load_model(str(masked)), load_model(str(dense)), input_shape=DIGITS) <= 1e-5
    assert stat_macs(dense) == stat_macs(pruned)  # the same channels as the dense prune


def test_vai_p_flow_masked_prune_finetune_transform(pruned: Path, base: Path, tmp_path: Path) -> None:
    """vai_p's order: a sparse (masked) model is finetuned with its zeros kept, then made dense."""
    masked = tmp_path / "masked"
    code, _, err = cli(
        "prune",
        "--model",
        str(base),
        "--data",
        "digits",
        "--uniform",
        "--rate",
        "0.5",
        "--mode",
        "masked",
        "--bn-recalib-images",
        "200",
        "--out",
        str(masked),
    )
    assert code == 0, err
    ft = tmp_path / "ft"
    code, _, err = cli(
        "finetune",
        "--model",
        str(masked / "model.pt"),
        "--data",
        "digits",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--out",
        str(ft),
    )
    assert code == 0, err
    before, after = load_model(str(masked / "model.pt")), load_model(str(ft / "best.pt"))
    changed = any(
        not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values(), strict=True)
    )
    assert changed  # it did train
    assert read_checkpoint(ft / "best.pt")["mask"] == read_checkpoint(masked / "model.pt")["mask"]
    dense = tmp_path / "dense"
    code, _, err = cli("transform", "--model", str(ft / "best.pt"), "--data", "digits", "--out", str(dense))
    assert code == 0, err
    assert json.loads((dense / "summary.json").read_text())["max_abs_diff"] <= 1e-5
    assert stat_macs(dense) == stat_macs(pruned)  # every masked channel stayed dead through the finetune


def test_mask_keeper_restores_zeros_that_an_update_disturbed(base: Path) -> None:
    from prunegym.core.pruning.masking import mask_keeper, mask_policy, transform

    model = load_model(str(base))
    masked = mask_policy(model, Policy.uniform(GROUPS, 0.5), input_shape=DIGITS)
    keep = mask_keeper(masked, masked.prunegym_mask, input_shape=DIGITS)
    with torch.no_grad():  # an optimizer step that (unlike plain SGD through ReLU) moves the dead channels
        for p in masked.parameters():
            p.add_(0.01)
    assert transform(masked, input_shape=DIGITS).model is not None
    assert stat_macs_of(transform(masked, input_shape=DIGITS).model) == stat_macs_of(model)  # nothing is dead now
    keep()
    result = transform(masked, input_shape=DIGITS)
    assert result.max_abs_diff <= 1e-5
    assert stat_macs_of(result.model) < 0.5 * stat_macs_of(model)


def stat_macs_of(model: nn.Module) -> int:
    return model_stats(model, input_shape=DIGITS).macs


def test_transform_of_a_torch_ln_structured_checkpoint(base: Path, tmp_path: Path) -> None:
    model = load_model(str(base))
    layers = list(model.features)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            torch_prune.ln_structured(layer, "weight", amount=0.5, n=1, dim=0)
            alive = (layer.weight_mask.flatten(1) != 0).any(1).float()
            for pname in ("weight", "bias"):  # the BatchNorm channels die too
                torch_prune.custom_from_mask(layers[i + 1], pname, alive)
    weights = tmp_path / "sparse.pt"
    torch.save(model.state_dict(), weights)
    assert "features.0.weight_orig" in torch.load(weights, weights_only=True)
    out = tmp_path / "dense"
    code, stdout, err = cli(
        "transform", "--model", "smallcnn", "--weights", str(weights), "--data", "digits", "--out", str(out)
    )
    assert code == 0, err
    assert "removed 96 zeroed channels in 4 groups" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["max_abs_diff"] <= 1e-5 and summary["compressed_accuracy"] == summary["baseline_accuracy"]
    assert max_abs_diff(load_model(str(out)), model, input_shape=DIGITS) <= 1e-5
    assert stat_macs(out) < 0.5 * stat_macs(base)


# ----------------------------------------------------------------------------------------------- iterate


def test_iterate_rounds_reload_resume_and_cli(base: Path, digits, tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "iter"
    cfg = IterateConfig(
        model=str(base),
        data="digits",
        out=str(run),
        rates=(0.2, 0.4),
        uniform=True,
        epochs_per_round=1,
        batch_size=64,
        max_steps_per_epoch=6,
        bn_recalib_images=200,
        eval_test=False,
        distill=True,
    )
    model = load_model(str(base))
    table = cost_table(model, input_shape=DIGITS)
    policies = [
        Policy.uniform(
            table.channels,
            uniform_ratio_for_macs(model, input_shape=DIGITS, target_macs_fraction=1 - r),
            input_shape=DIGITS,
        )
        for r in cfg.rates
    ]
    rounds = iterate_rounds(
        model=model, data=digits, config=cfg, policies=policies, input_shape=DIGITS, run_dir=run, teacher=model
    )
    base_macs = model_stats(model, input_shape=DIGITS).macs
    for r, rate in zip(rounds, cfg.rates, strict=True):
        folder = run / f"round_{r.round}"
        assert {"model.pt", "policy.yaml", "result.json", "finetune"} <= {p.name for p in folder.iterdir()}
        reloaded = load_model(str(folder / "model.pt"))
        assert max_abs_diff(reloaded, r.model, input_shape=DIGITS) == 0.0  # each round's model rebuilds exactly
        assert r.macs == model_stats(reloaded, input_shape=DIGITS).macs <= (1 - rate) * base_macs
        assert not r.skipped
    assert rounds[1].macs < rounds[0].macs
    for r in rounds:  # every round carries DeePhi's two summaries: before (pruned) and after the finetune
        c, f = r.compress_summary, r.finetune_summary
        assert c["compressed_accuracy"] == r.accuracy_pruned and c["compressed_top5"] == r.accuracy_pruned_top5
        assert f["compressed_top5"] == r.accuracy_top5 and 0 <= r.accuracy_pruned <= 100
        assert c["compressed_ops"] == f["compressed_ops"] == r.ops and f["baseline_params"] > r.params
    # channels never grow back: round 2 keeps a subset of round 1's counts
    p1, p2 = (Policy.load(run / f"round_{k}" / "policy.yaml") for k in (1, 2))
    assert all(p2.ratio(g) >= p1.ratio(g) for g in GROUPS) and p2.round_to == 1

    # the CLI resumes: finished rounds are skipped (no training), a new rate adds one round
    calls = []
    real_train = workflow.train

    def counting_train(**kw):
        calls.append(kw["run_dir"])
        return real_train(**kw)

    monkeypatch.setattr(workflow, "train", counting_train)
    code, out, err = cli(
        "iterate",
        "--model",
        str(base),
        "--data",
        "digits",
        "--uniform",
        "--rates",
        "0.2,0.4,0.6",
        "--epochs-per-round",
        "1",
        "--batch-size",
        "64",
        "--max-steps-per-epoch",
        "6",
        "--bn-recalib-images",
        "200",
        "--no-eval-test",
        "--out",
        str(run),
        "--resume",
    )
    assert code == 0, err
    assert calls == [run / "round_3" / "finetune"]
    lines = [line for line in out.splitlines() if line.startswith("After round")]
    assert [line.split(":")[0] for line in lines] == ["After round 1", "After round 2", "After round 3"]
    assert "operations" in lines[2] and "weights" in lines[2] and "top-1" in lines[2]
    shown = out + err  # the rounds print above the progress bar, on its console
    assert "round 3 compress summary" in shown and "round 3 finetune summary" in shown and "Top-5" in shown
    assert (run / "rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stat_macs(run) == stat_macs(run / "round_3" / "model.pt") <= 0.4 * stat_macs(base)
    # rates that disagree with the finished rounds: one line, nothing rewritten
    before = (run / "config.yaml").read_text()
    code, _, err = cli(
        "iterate",
        "--model",
        str(base),
        "--data",
        "digits",
        "--uniform",
        "--rates",
        "0.3,0.4",
        "--out",
        str(run),
        "--resume",
    )
    assert code == 2 and "was run with rate 0.2, not 0.3" in err
    assert (run / "config.yaml").read_text() == before


def test_the_deephi_summary_prints_exact_counts_and_fractional_deltas() -> None:
    from prunegym.workflow.summary import Summary

    summary = Summary(
        baseline_params=68_389,
        compressed_params=24_211,
        baseline_ops=49_053_696,
        compressed_ops=15_599_075,
        baseline_macs=1,
        compressed_macs=1,
        baseline_accuracy=86.5,
        compressed_accuracy=85.1,
        convention="deephi",
        baseline_top5=99.5,
        compressed_top5=99.2,
    )
    rows = {row[0]: row[1:] for row in summary.rows()}
    assert rows["Weights"] == ("68389", "24211", "-0.646")
    assert rows["Operations"] == ("49053696", "15599075", "-0.682")
    assert rows["Top-5"] == ("99.50%", "99.20%", "-0.30 pt")
    assert Summary.from_dict(summary.to_dict()) == summary


# ----------------------------------------------------------------------------------------------- bad input

BADNETS = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3)
        self.c2 = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8, 10)


class NumpyNet(Net):
    def forward(self, x):
        y = self.c1(x)
        y = torch.from_numpy(y.numpy())
        return self.fc(self.c2(y).mean((2, 3)))


class TupleNet(Net):
    def forward(self, x):
        y = self.c1(x)
        return self.fc(self.c2(y).mean((2, 3))), y
"""


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    (d / "pg_badnets.py").write_text(BADNETS)
    for name, ratios in (
        ("names", {"features.O": 0.5}),
        ("big", {"features.0": 1.5}),
        ("nan", {"features.0": float("nan")}),
        ("empty", {"features.3": 0.99}),
    ):
        (d / f"{name}.yaml").write_text(json.dumps({"ratios": ratios}).replace("NaN", ".nan"))
    drops = {g: (89.0, 88.0) for g in GROUPS}
    sens = Sensitivity(
        model="smallcnn",
        baseline=90.0,
        ratios=(0.1, 0.2),
        groups=GROUPS,
        accuracy=drops,
        macs={g: (None, None) for g in GROUPS},
        base_macs=1,
        base_params=1,
    )
    write_json(d / "ana" / "ana.json", sens.to_dict())
    return d


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (
            ("--policy", "{d}/names.yaml"),
            "unknown group 'features.O' for this model; did you mean 'features.7', 'features.3', 'features.0'?",
        ),
        (("--policy", "{d}/big.yaml"), "is 1.5, outside [0, 1)"),
        (("--policy", "{d}/nan.yaml"), "is NaN"),
        (("--policy", "{d}/empty.yaml"), "leaves no channel of group 'features.3'"),
        (("--uniform", "--rate", "0.999"), "unreachable with --uniform: at most 0.9"),
        (("--uniform", "--rate", "nan"), "--rate nan is outside (0, 1)"),
        (("--uniform", "--rate", "1.5"), "--rate 1.5 is outside (0, 1)"),
        (("--ana", "{d}/ana", "--rate", "0.9"), "unreachable from the ana result: at most 0.3"),
        (("--ana", "{d}/nowhere", "--rate", "0.5"), "no sensitivity analysis there"),
        (("--ana", "{d}/ana", "--threshold", "-1"), "must be a number ≥ 0"),
        (("--rate", "0.5"), "pass one: --ana DIR"),
        (("--uniform", "--threshold", "1"), "--uniform needs --rate"),
    ],
)
def test_prune_bad_input_is_one_line_exit_2(base, bad_inputs, tmp_path, args, pattern) -> None:
    out = tmp_path / "out"
    argv = [a.replace("{d}", str(bad_inputs)) for a in args]
    code, stdout, err = cli("prune", "--model", str(base), *argv, "--out", str(out))
    assert code == 2, stdout + err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert pattern in lines[0], lines[0]
    assert not out.exists()  # nothing written


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (
            ("prune", "--model", "pg_badnets:NumpyNet", "--input-shape", "3,16,16", "--uniform", "--rate", "0.3"),
            "cannot trace the model's graph for pruning: RuntimeError at pg_badnets.py:17 `y = torch.from_numpy(",
        ),
        (
            ("prune", "--model", "pg_badnets:TupleNet", "--input-shape", "3,16,16", "--uniform", "--rate", "0.3"),
            "model returns a tuple, not one tensor of logits",
        ),
        (("ana", "--model", "smallcnn", "--data", "digits", "--ratios", "0.1,1.2"), "--ratios 1.2 is outside (0, 1)"),
        (("iterate", "--model", "smallcnn", "--data", "digits", "--uniform", "--rates", "0.3,0.2"), "must increase"),
        (("iterate", "--model", "smallcnn", "--data", "digits", "--rates", "0.3"), "pass one: --ana DIR"),
        (("transform", "--model", "smallcnn", "--weights", "/nonexistent.pt"), "checkpoint not found"),
    ],
)
def test_other_bad_inputs(bad_inputs, monkeypatch, tmp_path, argv, pattern) -> None:
    monkeypatch.syspath_prepend(str(bad_inputs))
    code, stdout, err = cli(*argv, "--out", str(tmp_path / "out"))
    assert code == 2, stdout + err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert pattern in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
