"""prunegym.env: the Gymnasium pruning environment, its evaluator, rewards and latency models."""

from prunegym.env.evaluator import Evaluation, Evaluator, EvaluatorConfig
from prunegym.env.factory import EnvSpec, build_env, make_env_fn
from prunegym.env.pruning_env import EnvConfig, PruningEnv

__all__ = [
    "EnvConfig",
    "EnvSpec",
    "Evaluation",
    "Evaluator",
    "EvaluatorConfig",
    "PruningEnv",
    "build_env",
    "make_env_fn",
]
