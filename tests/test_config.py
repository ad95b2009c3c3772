from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from prunegym.core.config import read_config_file, resolve_config
from prunegym.core.errors import ConfigError, UserError
from prunegym.core.train import TrainConfig, get_lr


def test_flags_override_file_and_file_overrides_defaults(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("model: resnet20\ndata: digits\nworkspace: runs/x\nepochs: 3\nlr: 0.05\nnesterov: 'no'\n")
    cfg = resolve_config(TrainConfig, file_values=read_config_file(f), flag_values={"lr": 0.2, "command": "train"})
    assert (cfg.model, cfg.out, cfg.epochs, cfg.lr, cfg.nesterov, cfg.batch_size) == (
        "resnet20",
        "runs/x",
        3,
        0.2,
        False,
        128,
    )


def test_unknown_key_names_the_key_and_the_known_ones(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("model: resnet20\ndata: digits\nout: o\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) learning_rate; known keys: .*lr"):
        resolve_config(TrainConfig, file_values=read_config_file(f), flag_values={})


def test_bad_value_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'epochs' = 'many' is not a valid int"):
        resolve_config(
            TrainConfig, file_values={"model": "m", "data": "d", "out": "o", "epochs": "many"}, flag_values={}
        )
    f = tmp_path / "bad.yaml"
    f.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        read_config_file(f)
    with pytest.raises(ConfigError, match="missing required option"):
        resolve_config(TrainConfig, file_values={}, flag_values={})
    with pytest.raises(UserError, match="epochs must be"):
        resolve_config(TrainConfig, file_values={"model": "m", "data": "d", "out": "o", "epochs": 0}, flag_values={})


def test_lr_schedule_warmup_then_cosine() -> None:
    lrs = [get_lr(s, total_steps=100, warmup_steps=10, base_lr=0.1) for s in range(101)]
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[9] == pytest.approx(0.1)
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[55] == pytest.approx(0.05)
    assert lrs[100] == pytest.approx(0.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def test_every_command_reads_config_and_a_written_config_yaml_is_accepted_back(
    tmp_path: Path, capsys: pytest.CaptureFixture, digits_model: Path
) -> None:
    import json as _json

    from prunegym.cli.main import main

    cfg = tmp_path / "stat.yaml"
    cfg.write_text("model: smallcnn\ninput-shape: 1,8,8\njson: true\n")
    assert main(["stat", "--config", str(cfg)]) == 0  # a plain command takes its options from the file
    assert _json.loads(capsys.readouterr().out)["input_shape"] == [1, 8, 8]
    cfg.write_text("model: smallcnn\nbogus: 3\n")
    assert main(["stat", "--config", str(cfg)]) == 2
    assert "bogus" in capsys.readouterr().err
    run = tmp_path / "amc"
    base = ["--val-size", "200", "--bn-recalib-images", "100", "--episodes", "2", "--warmup-episodes", "1"]
    assert main(["agent", "train", "--model", str(digits_model), "--data", "digits", *base, "--out", str(run)]) == 0
    again = tmp_path / "again"
    assert main(["agent", "train", "--config", str(run / "config.yaml"), "--out", str(again)]) == 0  # `command:` too
    show = tmp_path / "show.yaml"
    show.write_text(f"run: {run}\n")
    assert main(["agent", "show", "--config", str(show)]) == 0  # a positional from the file
