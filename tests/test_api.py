"""The public API and the layering a newcomer relies on: ``import prunegym``, the Gymnasium registration, and
imports that point down only."""

from __future__ import annotations

import ast
import importlib.metadata
import tomllib
import warnings
from pathlib import Path

import pytest

import prunegym
from prunegym.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "env", "agents", "search", "workflow", "deploy", "cli")
# what each layer may import from prunegym (besides itself)
ALLOWED = {
    "core": set(),
    "env": {"core"},
    "agents": {"core", "env"},
    "search": {"core", "env"},
    "workflow": {"core", "env"},
    "deploy": {"core", "env"},
    "cli": {"core", "env", "agents", "search", "workflow", "deploy"},
}


def test_every_public_name_resolves_and_the_version_is_the_installed_one() -> None:
    for name in prunegym.__all__:
        assert getattr(prunegym, name) is not None, name
    assert prunegym.__version__ == importlib.metadata.version("prunegym")
    assert {
        "PruningEnv",
        "build_env",
        "Policy",
        "apply_policy",
        "AMCDDPG",
        "run_search",
        "run_study",
        "run_replay",
        "Classifier",
    } <= set(prunegym.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = prunegym.nope


def test_gymnasium_make_builds_an_env_that_passes_both_env_checkers(digits_model: Path) -> None:
    import gymnasium
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gymnasium.make(
        prunegym.ENV_ID, model=str(digits_model), data="digits", val_size=200, bn_recalib_images=100, target_ratio=0.6
    )
    assert isinstance(env.unwrapped, prunegym.PruningEnv)
    assert env.unwrapped.config.target_ratio == 0.6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)
    with pytest.raises(ConfigError, match="unknown config key"):
        gymnasium.make(prunegym.ENV_ID, model=str(digits_model), data="digits", learning_rate=1.0)


def _prunegym_imports(path: Path) -> set[str]:
    """The prunegym layers a module imports (``from prunegym.env.x import y`` → ``env``), lazy imports included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    layers = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "prunegym" and len(parts) > 1:
                layers.add(parts[1])
    return layers


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_point_down_only(layer: str) -> None:
    wrong = {}
    for path in sorted((ROOT / layer).rglob("*.py")):
        upward = _prunegym_imports(path) - ALLOWED[layer] - {layer}
        if upward:
            wrong[str(path.relative_to(ROOT))] = sorted(upward)
    assert not wrong, f"{layer} imports layers above it: {wrong}"


def test_the_bundle_runtime_the_runtime_layer_and_the_device_worker_import_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None; import prunegym.deploy.runtime, prunegym.core.onnxrt, "
        "prunegym.core.remote, prunegym.cli.device, prunegym.deploy.benchmark"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    # the worker serves without torch: its whole command parses and reaches the network
    serve = [
        sys.executable,
        "-c",
        "import sys; sys.modules['torch'] = None; from prunegym.cli.main import main; "
        "sys.exit(main(['device', 'serve', '--redis', 'redis://127.0.0.1:1/0', '--name', 'x']))",
    ]
    done = subprocess.run(serve, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "cannot reach Redis at redis://127.0.0.1:1/0" in done.stderr, done.stderr


def test_pyproject_lists_every_package_folder() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = {"prunegym"}
    for layer in LAYERS:
        for init in (ROOT / layer).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / layer)
            found.add(".".join(("prunegym", layer, *rel.parts)))
    assert found == listed


def test_no_module_is_over_500_lines() -> None:
    long = {}
    for layer in (*LAYERS, "prunegym"):
        for path in (ROOT / layer).rglob("*.py"):
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > 500:
                long[str(path.relative_to(ROOT))] = n
    assert not long, long


def test_the_readme_python_example_runs_the_three_jobs(digits_model: Path, tmp_path: Path, monkeypatch) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.count("\n") <= 14 and "run_search" in code and "run_study" in code and "run_replay" in code
    monkeypatch.chdir(tmp_path)
    code = code.replace("runs/demo/baseline/best.pt", str(digits_model)).replace("digits?size=32", "digits")
    code = code.replace("print(", "label = (")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert (tmp_path / "runs/py-replay/bundle/model.int8.onnx").is_file()
    assert scope["label"] in {str(d) for d in range(10)}
