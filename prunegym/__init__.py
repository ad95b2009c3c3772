"""prunegym: make trained CNNs smaller and faster for a real device, automatically.

The public API, in the order of the three jobs (names load lazily, so ``import prunegym`` stays cheap)::

    import prunegym

    spec = prunegym.EnvSpec.from_options(model="runs/demo/baseline/best.pt", data="digits?size=32", val_size=280)
    env = prunegym.build_env(spec)                                             # a gymnasium.Env
    agent = prunegym.run_search(env=env, config=prunegym.SearchConfig(episodes=60), run_dir=Path("runs/amc"))
    study = prunegym.run_study(env=env, config=prunegym.StudyConfig(n_trials=60), run_dir=Path("runs/optuna"))
    replay = prunegym.ReplayConfig(policy="runs/amc/best_policy.yaml", model=spec.model, data=spec.data)
    _, out = prunegym.run_replay(replay)                                       # finetune → ONNX → INT8 → bundle
    print(prunegym.Classifier(out["bundle"]).predict("image.png")[0].label)    # ONNX Runtime only

The README's "Python API" section runs this end to end.

The environment is registered with Gymnasium as ``prunegym/Pruning-v0`` (keyword arguments: the
:class:`EnvSpec` options), so ``gymnasium.make("prunegym/Pruning-v0", model=..., data=...)`` works too.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from prunegym.core.lazy import lazy_attributes

if TYPE_CHECKING:  # editors and type checkers resolve the lazy names here
    from prunegym.agents.ddpg import AMCDDPG
    from prunegym.agents.runner import run_search
    from prunegym.agents.search_config import SearchConfig
    from prunegym.core.policy import Policy
    from prunegym.core.pruning import apply_policy
    from prunegym.deploy.replay import run_replay
    from prunegym.deploy.replay_config import ReplayConfig
    from prunegym.deploy.runtime import Classifier
    from prunegym.env.factory import EnvSpec, build_env
    from prunegym.env.pruning_env import PruningEnv
    from prunegym.search.optuna_config import StudyConfig
    from prunegym.search.optuna_study import run_study

__all__ = [
    "AMCDDPG",
    "ENV_ID",
    "Classifier",
    "EnvSpec",
    "Policy",
    "PruningEnv",
    "ReplayConfig",
    "SearchConfig",
    "StudyConfig",
    "__version__",
    "apply_policy",
    "build_env",
    "run_replay",
    "run_search",
    "run_study",
]

ENV_ID = "prunegym/Pruning-v0"

_WHERE = {
    "AMCDDPG": "prunegym.agents.ddpg",
    "Classifier": "prunegym.deploy.runtime",
    "EnvSpec": "prunegym.env.factory",
    "Policy": "prunegym.core.policy",
    "PruningEnv": "prunegym.env.pruning_env",
    "ReplayConfig": "prunegym.deploy.replay_config",
    "SearchConfig": "prunegym.agents.search_config",
    "StudyConfig": "prunegym.search.optuna_config",
    "apply_policy": "prunegym.core.pruning",
    "build_env": "prunegym.env.factory",
    "run_replay": "prunegym.deploy.replay",
    "run_search": "prunegym.agents.runner",
    "run_study": "prunegym.search.optuna_study",
}

try:
    __version__ = version("prunegym")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


__getattr__ = lazy_attributes(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _register_env() -> None:
    try:
        import gymnasium
    except ImportError:  # a deploy-only environment: the bundle runtime needs no Gymnasium
        return
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="prunegym.env.factory:make_env")


_register_env()
