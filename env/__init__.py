"""prunegym.env: the Gymnasium pruning environment, its evaluator, rewards and latency models (:mod:`.latency`).

Names are imported lazily (importing this package loads neither PyTorch nor Gymnasium).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "EnvConfig": "spec",
    "EnvSpec": "spec",
    "LatencySpec": "spec",
    "Evaluation": "evaluator",
    "Evaluator": "evaluator",
    "EvaluatorConfig": "spec",
    "PruningEnv": "pruning_env",
    "build_env": "factory",
    "make_env": "factory",
    "make_env_fn": "factory",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'prunegym.env' has no attribute '{name}'")
    return getattr(importlib.import_module(f"prunegym.env.{_WHERE[name]}"), name)
