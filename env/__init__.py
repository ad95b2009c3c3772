"""prunegym.env: the Gymnasium pruning environment, its evaluator, rewards and latency models (:mod:`.latency`).

Names are imported lazily (importing this package loads neither PyTorch nor Gymnasium).
"""

from __future__ import annotations

from prunegym.core.lazy import lazy_attributes

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


__getattr__ = lazy_attributes(__name__, _WHERE)
