"""The CLI as a user meets it: exit codes, one-line errors, JSON outputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from prunegym.cli import main as cli_main
from prunegym.cli.main import REGISTRY, build_parser, main
from prunegym.core.models import build_model


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_help_lists_commands_with_examples(capsys) -> None:
    parser = build_parser()
    text = parser.format_help()
    for command in ("stat", "eval", "train", "finetune"):
        assert command in text
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert "example:" in p.format_help(), name


def _command_paths(parser) -> list[tuple[str, ...]]:
    """Every command and sub-action of the parser, as argv prefixes (``("agent", "train")``)."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((name,))
                paths.extend((name, *rest) for rest in _command_paths(sub))
    return paths


def test_registry_names_every_command_its_modules_register() -> None:
    parser = build_parser()
    top = next(a for a in parser._actions if a.dest == "command")
    declared = [name for family in REGISTRY for name in family.names]
    assert sorted(top.choices) == sorted(declared)
    assert len(declared) == len(set(declared))


def test_every_registered_command_builds_its_help(capsys) -> None:
    paths = _command_paths(build_parser())
    assert ("agent", "train") in paths and ("latency", "build") in paths and ("deploy", "run") in paths
    assert len(paths) >= 25
    for path in paths:
        with pytest.raises(SystemExit) as stop:
            main([*path, "--help"])
        assert stop.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith("usage: prunegym " + " ".join(path)), path
        assert "example:" in out, path


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["nosuchcommand"],
        ["--debug"],
        ["replay", "--nonsense"],
        ["latency", "build", "--grid-step", "abc"],
        ["deploy", "run"],
        ["replay", "--help"],
        ["latency", "check", "--help"],
    ],
)
def test_help_version_and_argument_errors_answer_without_importing_torch(argv: list[str]) -> None:
    import subprocess
    import sys

    code = (
        "import sys, time; t = time.perf_counter(); from prunegym.cli.main import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', round(time.perf_counter() - t, 2), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert "NO-TORCH" in done.stderr, done.stderr[-500:]
    if argv == ["--version"]:
        assert done.stdout.startswith("prunegym ")


def test_a_family_whose_dependency_is_missing_is_listed_and_says_what_to_install(monkeypatch, capsys) -> None:
    real_import = cli_main.importlib.import_module

    def without_torch(name: str):
        if name == "prunegym.cli.agent":
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        return real_import(name)

    monkeypatch.setattr(cli_main.importlib, "import_module", without_torch)
    assert "needs torch" in build_parser().format_help()
    code, _, err = run(capsys, "agent", "train")
    assert code == 2
    assert "needs the package 'torch'" in one_line_error(err)


def test_stat_json_resnet56(capsys) -> None:
    code, out, _ = run(capsys, "stat", "--model", "resnet56", "--json")
    obj = json.loads(out)
    assert code == 0 and obj["params"] == 853_018 and obj["macs"] == 125_485_696
    assert obj["layers"][0]["name"] == "conv1"


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (("stat", "--model", "resnet57"), "unknown model 'resnet57'; known models"),
        (("stat", "--model", "resnet20", "--weights", "/nonexistent/w.th"), "checkpoint not found"),
        (("eval", "--model", "smallcnn", "--data", "cifar10:/nonexistent"), "cifar10"),
        (("eval", "--model", "smallcnn", "--data", "imagenet:/x"), "unknown"),
        (("stat", "--model", "resnet20", "--input-shape", "3x32"), "must be C,H,W"),
        *(
            (
                (cmd, *need, "--out", "/nonexistent/out", "--teacher-precision", "fp16"),
                "--teacher-precision must be fp32 or bf16, got 'fp16'",
            )
            for cmd, *need in (
                ("finetune", "--model", "smallcnn", "--data", "digits"),
                ("replay", "--policy", "p.yaml"),
                ("compress", "--model", "smallcnn", "--data", "digits"),
                ("iterate", "--model", "smallcnn", "--data", "digits", "--uniform", "--rates", "0.1"),
            )
        ),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(capsys, argv, pattern) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert pattern in one_line_error(err)


def test_class_count_mismatch(tmp_path: Path, capsys) -> None:
    path = tmp_path / "w.pt"
    torch.save(build_model("smallcnn", in_channels=1, num_classes=5).state_dict(), path)
    code, _, err = run(capsys, "eval", "--model", "smallcnn", "--weights", str(path), "--data", "digits")
    assert code == 2
    assert "does not fit the model" in one_line_error(err)


def test_unknown_config_key(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: smallcnn\ndata: digits\nworkspace: x\nlearning_rate: 1\n")
    code, _, err = run(capsys, "train", "--config", str(cfg))
    assert code == 2 and "unknown config key(s) learning_rate" in one_line_error(err)


def test_train_eval_and_resume_from_the_cli(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    base = ("train", "--model", "smallcnn", "--data", "digits", "--out", str(out), "--batch-size", "64", "--lr", "0.05")
    code, _, _ = run(capsys, *base, "--epochs", "2")
    assert code == 0 and (out / "best.pt").exists() and (out / "config.yaml").exists()
    code, _, err = run(capsys, *base, "--epochs", "2")
    assert code == 2 and "--resume" in one_line_error(err)
    code, _, err = run(capsys, *base, "--epochs", "3", "--resume")  # a longer cosine schedule is another run
    assert code == 2 and "epochs 2 → 3" in one_line_error(err)
    code, _, _ = run(capsys, *base, "--epochs", "2", "--resume")  # a finished run returns at once
    assert code == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    code, out_json, _ = run(capsys, "eval", "--model", str(out / "best.pt"), "--data", "digits", "--json")
    result = json.loads(out_json)
    assert code == 0 and result["n"] == 359 and result["top1"] > 60.0  # two epochs (chance is 10%)


@pytest.mark.parametrize(("extra", "threads"), [([], 1), (["--torch-threads", "2"], 2)])
def test_commands_run_on_one_torch_thread_unless_told(extra: list[str], threads: int) -> None:
    import os
    import subprocess
    import sys

    code = (
        "import sys; from prunegym.cli.main import main\n"
        "main(['stat', '--model', 'smallcnn', '--input-shape', '1,8,8', '--json', *sys.argv[1:]])\n"
        "import torch; print('THREADS', torch.get_num_threads(), file=sys.stderr)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", code, *extra], capture_output=True, text=True, env=env, timeout=120)
    assert f"THREADS {threads}" in done.stderr, done.stderr[-500:]
