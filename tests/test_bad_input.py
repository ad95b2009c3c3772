"""Every bad input gets one line on stderr and exit code 2: a walk over every command's typed options, and a
table of values that parse but mean nothing."""

from __future__ import annotations

import argparse

import pytest

from prunegym.cli.main import build_parser, main


def _leaves(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = []
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs and prefix:
        out.append((prefix, parser))
    for action in subs:
        for name, sub in action.choices.items():
            out.extend(_leaves(sub, (*prefix, name)))
    return out


def _one_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own errors exit
        code = stop.code
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, (argv, err)
    return lines[0]


def _typed_options() -> list[tuple[tuple[str, ...], str, str]]:
    """(command path, flag, bad value) for every option that takes a number or one of fixed choices."""
    cases = []
    for path, parser in _leaves(build_parser()):
        for action in parser._actions:
            if not action.option_strings or action.dest in ("help", "config", "allow_import"):
                continue
            flag = action.option_strings[-1]
            if action.choices:
                cases.append((path, flag, "not-a-choice"))
            elif action.type is not None and getattr(action.type, "__name__", "") != "str":
                cases.append((path, flag, "abc"))
    return cases


CASES = _typed_options()


def test_the_walk_covers_every_command() -> None:
    paths = {path for path, _, _ in CASES}
    assert {("eval",), ("agent", "train"), ("latency", "build"), ("deploy", "bench"), ("optuna", "run")} <= paths
    assert len(CASES) >= 100


@pytest.mark.parametrize(("path", "flag", "value"), CASES, ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_a_typed_option_with_a_bad_value_is_one_line_and_exit_2(
    path: tuple[str, ...], flag: str, value: str, capsys: pytest.CaptureFixture
) -> None:
    line = _one_line(capsys, [*path, flag, value])
    assert flag in line or "argument" in line, line


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["eval", "--model", "smallcnn", "--data", "digits", "--limit", "0"], "--limit: 0 is not a positive integer"),
        (["eval", "--model", "smallcnn", "--data", "digits", "--batch-size", "0"], "--batch-size: 0 is not"),
        (["eval", "--model", "smallcnn", "--data", "digits", "--bn-recalib", "-5"], "--bn-recalib: -5 is not"),
        (["deploy", "bench", "B", "--threads", "abc"], "--threads: 'abc' is not a comma-separated"),
        (["deploy", "bench", "B", "--threads", "0"], "--threads: '0' is not"),
        (["deploy", "run", "B", "x.png", "--threads", "0"], "--threads: 0 is not a positive integer"),
        (["deploy", "run", "B", "x.png", "--top-k", "-1"], "--top-k: -1 is not"),
        (["env", "rollout", "--model", "smallcnn", "--data", "digits", "--episodes", "0"], "--episodes: 0"),
        (["demo", "--epochs", "0"], "--epochs: 0 is not a positive integer"),
        (["stat", "--model", "resnet20", "--input-shape", "3,0,32"], "must be C,H,W of positive sizes"),
        (["stat"], "required: --model"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_values_that_parse_but_mean_nothing_are_one_line_and_exit_2(
    argv: list[str], pattern: str, capsys: pytest.CaptureFixture
) -> None:
    assert pattern in _one_line(capsys, argv)


def test_every_option_of_every_command_has_a_help_text() -> None:
    missing = []
    for path, parser in _leaves(build_parser()):
        for action in parser._actions:
            if action.dest == "help":
                continue
            text = (action.help or "").strip()
            if not text or text == argparse.SUPPRESS or text.startswith("(default"):
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_deploy_run_says_what_it_did_to_an_image_and_refuses_what_it_cannot_read_faithfully(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import numpy as np
    from PIL import Image

    from prunegym.core.errors import UserError
    from prunegym.deploy.runtime import Preprocessing

    pre = Preprocessing(channels=1, input_size=(8, 8), mean=(0.5,), std=(0.25,))
    rgba = tmp_path / "a.png"
    Image.fromarray(np.full((20, 30, 4), 200, np.uint8), mode="RGBA").save(rgba)
    with caplog.at_level(logging.INFO, logger="prunegym.deploy.runtime"):
        assert pre.to_array(rgba).shape == (1, 8, 8)
    assert "alpha dropped" in caplog.text and "colour to grey" in caplog.text and "resized 30×20 → 8×8" in caplog.text
    deep = tmp_path / "d.png"
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(deep)
    with pytest.raises(UserError, match="16-bit pixels"):
        pre.to_array(deep)


def test_a_shape_a_saved_model_cannot_run_on_is_named(digits_model, capsys: pytest.CaptureFixture) -> None:
    line = _one_line(capsys, ["stat", "--model", str(digits_model), "--input-shape", "3,8,8"])
    assert "cannot run on input 3,8,8" in line
