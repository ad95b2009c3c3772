"""A data file never chooses code to run: model factories named by checkpoints, run folders and config files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from test_agent_env import agent_train

from prunegym.cli.main import main
from prunegym.core.errors import UserError
from prunegym.core.models import build_model
from prunegym.core.user_models import allowed_factories, parse_factory_spec

FACTORY = """
import torch.nn as nn

def make(width=4, classes=10):
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, classes))
"""


def test_a_checkpoint_naming_os_abort_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "x.pt"
    torch.save({"format": "prunegym.model/1", "model": "os:abort", "state_dict": {}}, bad)
    assert main(["eval", "--model", str(bad), "--data", "digits"]) == 2  # this process is still alive
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'os:abort'" in err and "--allow-import os:abort" in err


def test_a_run_folder_config_naming_os_abort_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "os:abort", "data": "digits", "command": "agent train"}))
    (run / "best_policy.yaml").write_text(yaml.safe_dump({"version": 1, "ratios": {}}))
    assert main(["replay", "--run", str(run), "--out", str(tmp_path / "r"), "--epochs", "1"]) == 2
    assert "'os:abort'" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": "os:abort"}))
    assert main(["stat", "--config", str(cfg), "--input-shape", "1,8,8"]) == 2  # a --config file is data too


def test_a_checkpoint_asking_for_a_billion_classes_is_refused_before_allocating(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "big.pt"
    torch.save({"format": "prunegym.model/1", "model": "resnet20", "num_classes": 10**9, "state_dict": {}}, bad)
    assert main(["stat", "--model", str(bad)]) == 2
    assert "num_classes=1000000000" in capsys.readouterr().err
    with pytest.raises(UserError, match="in_channels=0"):
        build_model("smallcnn", in_channels=0)


def test_a_factory_typed_on_the_command_line_runs_with_its_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "net.py"
    path.write_text(FACTORY)
    assert main(["stat", "--model", f"{path}:make?width=6&classes=3", "--input-shape", "1,8,8", "--json"]) == 0
    assert '"params": ' in capsys.readouterr().out
    with pytest.raises(UserError, match="would run its code"):
        build_model(f"{path}:make")  # outside that command, not allowed
    with allowed_factories([f"{path}:make"]):
        net = build_model(f"{path}:make?width=5")
    assert net[0].out_channels == 5 and net.prunegym_info.name == f"{path}:make?width=5"  # how to rebuild it
    for bad, match in (
        ("pkg.mod:make?width", "not key=value"),
        ("pkg.mod:make?width=[1,2]", "must be a number"),
        ("pkg.mod:", "wants package.module:factory"),
    ):
        with pytest.raises(UserError, match=match):
            parse_factory_spec(bad)
    assert os.getpid() > 0


def _search(model: Path, out: Path, *extra: str) -> int:
    return agent_train(model, out, "--episodes", "4", *extra)  # the last --episodes wins


def test_a_tampered_or_corrupt_agent_checkpoint_is_a_one_line_error(
    digits_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    out = tmp_path / "amc"
    assert _search(digits_model, out) == 0
    latest = out / "checkpoints" / "latest.json"
    good = latest.read_text()
    folder = out / "checkpoints" / json.loads(good)["folder"]
    capsys.readouterr()
    for name in ("../../elsewhere", "/etc", ".."):  # a path read from a run file stays inside the run
        latest.write_text(json.dumps({"folder": name}))
        assert _search(digits_model, out, "--episodes", "6", "--resume") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "not a folder of" in err, err
    latest.write_text(good)
    (folder / "agent.pt").write_bytes(b"not a torch file at all")
    assert _search(digits_model, out, "--episodes", "6", "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read" in err and "agent.pt" in err, err
    torch.save({"params": {}, "tensors": {"policy.actor.mu.0.weight": torch.zeros(1)}}, folder / "agent.pt")
    assert _search(digits_model, out, "--episodes", "6", "--resume") == 2
    assert "this agent lacks" in capsys.readouterr().err
    buffers = list(folder.glob("*.npz"))
    assert buffers, list(folder.iterdir())
    (folder / "agent.pt").unlink()
    assert _search(digits_model, tmp_path / "fresh", "--episodes", "2") == 0  # a good agent.pt to put back
    fresh = tmp_path / "fresh" / "checkpoints"
    (folder / "agent.pt").write_bytes(
        (fresh / json.loads((fresh / "latest.json").read_text())["folder"] / "agent.pt").read_bytes()
    )
    buffers[0].write_bytes(b"PK\x03\x04 truncated")
    capsys.readouterr()
    assert _search(digits_model, out, "--episodes", "6", "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot restore the agent" in err, err


def test_a_policy_made_for_another_zoo_model_is_refused() -> None:
    from prunegym.core.policy import Policy, PolicyError
    from prunegym.core.pruning import apply_policy

    policy = Policy(ratios={"layer1.0.conv1": 0.5}, model="resnet20")
    with pytest.raises(PolicyError, match="made for resnet20, this model is resnet32"):
        apply_policy(build_model("resnet32"), policy, input_shape=(3, 32, 32))  # the group names exist in both
    assert apply_policy(build_model("resnet20"), policy, input_shape=(3, 32, 32)) is not None
