"""``PruningEnv``: layer-wise pruning decisions as a Gymnasium environment (AMC, He et al. 2018)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from prunegym.core.errors import UserError
from prunegym.core.policy import Policy
from prunegym.env.evaluator import Evaluator
from prunegym.env.features import FEATURES, observation, static_features
from prunegym.env.latency import LatencyModel
from prunegym.env.rewards import RewardInputs, get_reward, needs_latency
from prunegym.env.spec import EnvConfig

log = logging.getLogger(__name__)


class PruningEnv(gym.Env):
    """
    ## Description
    One episode prunes a trained model once: each step chooses the pruning ratio of one prunable group
    (channels coupled through residual additions move together), in forward order. After the last group the
    model is really pruned, BatchNorm is re-calibrated, optionally finetuned for a few steps, scored on a
    held-out split of the training set, and (optionally) timed on the device. This is AMC's formulation
    (He et al., ECCV 2018) with groups instead of single layers, so residual networks are supported.

    ## Action Space
    ``Box(-1, 1, (1,), float32)``: mapped linearly to a ratio in ``[min_ratio, max_ratio]``. With ``depth``, the
    group inside a removable residual block maps the lower ``1 - remove_band`` of the range to its ratio and the
    top ``remove_band`` to "remove the block" (one continuous action covers width and depth). With the action
    wall on, the decision is then raised to the smallest one that keeps the target reachable if every later
    group were pruned at ``max_ratio`` and every later block removed (AMC's ``_action_wall``), computed exactly
    with the cost table (MACs/params) or with the predicted-latency table (``--target latency``).

    ## Observation Space
    ``Box(0, 1, (11,), float32)``, AMC's layer features and whether the group may remove its block, in [0, 1]:

    | Num | Observation  | Meaning                                                   |
    |-----|--------------|-----------------------------------------------------------|
    | 0   | index        | position of the group in forward order                    |
    | 1   | type         | conv 0, depthwise-coupled 0.5, linear 1                   |
    | 2   | in_channels  | input channels of the group's root layer                  |
    | 3   | out_channels | channels of the group                                     |
    | 4   | stride       | stride of the root layer                                  |
    | 5   | kernel       | kernel size of the root layer                             |
    | 6   | macs         | MACs the group's ratio scales                             |
    | 7   | macs_reduced | MACs already removed by earlier actions / total MACs      |
    | 8   | macs_rest    | MACs of the later groups / total MACs                     |
    | 9   | prev_action  | the previous group's ratio (1 when it removed its block)  |
    | 10  | removable    | 1 when this group's action may remove its residual block  |

    ## Rewards
    0 on every step but the last; then the named reward (``acc``, ``acc_flops``, ``latency_soft``,
    ``latency_hard``) of the evaluated model, accuracy as a fraction.

    ## Episode End
    Terminates after the last prunable group; never truncates.

    ## Arguments
    ``PruningEnv(evaluator=..., config=EnvConfig(...), latency=None)``: the evaluator owns the base model, the
    data and the scoring; ``latency`` is a :class:`~prunegym.env.latency.LatencyModel` or None.
    The final ``info`` carries ``policy``, ``reward``, ``accuracy``, ``top5``, ``macs``, ``macs_ratio``,
    ``params_ratio``, ``latency_ms``, ``latency_ratio``, ``episode_actions`` and ``seconds`` (wall time per phase;
    the only non-deterministic entry).
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention

    def __init__(self, *, evaluator: Evaluator, config: EnvConfig, latency: LatencyModel | None = None) -> None:
        super().__init__()
        if (needs_latency(config.reward) or config.target == "latency") and latency is None:
            raise UserError(
                f"reward '{config.reward}' / target '{config.target}' needs a latency model; "
                "pass --latency measured or --latency predicted"
            )
        self.evaluator = evaluator
        self.config = config
        self.latency = latency
        self.table = evaluator.table
        self.group_names = evaluator.group_names
        if not self.group_names:
            raise UserError("the model has no prunable groups; nothing to search")
        from prunegym.core.pruning import prunable_groups

        self.groups = prunable_groups(
            evaluator.model, input_shape=evaluator.input_shape, residual_stream=evaluator.config.residual_stream
        )
        self.num_groups = len(self.groups)
        self.blocks = self._block_of_group() if config.depth else {}
        self._static = static_features(self.groups, removable=set(self.blocks))
        self.total_macs = float(self.table.macs)
        self.observation_space = spaces.Box(0.0, 1.0, (len(FEATURES),), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.target_ms = latency.baseline_ms * config.target_ratio if latency is not None else None
        self._check_reachable()
        self._ratios: dict[str, float] = {}
        self._removed: list[str] = []
        self._index = 0
        self._prev = 0.0

    def _block_of_group(self) -> dict[str, str]:
        """Group name → the removable residual block it is the inner group of (those a latency table covers)."""
        from prunegym.core.pruning import block_groups

        blocks = block_groups(self.evaluator.model, self.group_names)
        out = {group: block for block, group in blocks.items()}
        if self.latency is not None and not self.latency.needs_model:
            covered = set(getattr(self.latency, "blocks", {}))
            out = {group: block for group, block in out.items() if block in covered}
        if len(out) < len(blocks):
            log.warning(
                "the predicted-latency table covers %d of the model's removable blocks; depth actions only for those "
                "(rebuild it with `prunegym latency build --depth` for all)",
                len(out),
            )
        return out

    # ------------------------------------------------------------------------------------------- budget

    @property
    def _predictor(self) -> Any:
        """The latency model when it predicts from ratios alone (a latency table), else None."""
        lat = self.latency
        return lat if lat is not None and not lat.needs_model and hasattr(lat, "predict") else None

    def _resource(self, ratios: Mapping[str, float], removed: Sequence[str] = ()) -> float:
        if self.config.target == "latency" and self._predictor is not None:
            return float(self._predictor.predict(ratios, removed=removed)) / float(self.latency.baseline_ms)
        macs, params = self.table.predict(ratios, round_to=self.evaluator.config.round_to, removed=removed)
        if self.config.target == "params":
            return params / self.table.params
        return macs / self.table.macs  # macs, and the MACs proxy of a measured-latency target

    def _check_reachable(self) -> None:
        if (self.config.target == "latency" and self._predictor is None) or not self.config.action_wall:
            return
        best = self._resource(dict.fromkeys(self.group_names, self.config.max_ratio), list(self.blocks.values()))
        if best > self.config.target_ratio + 1e-9:
            raise UserError(
                f"target {self.config.target}={self.config.target_ratio:.3f} is unreachable: even max_ratio "
                f"{self.config.max_ratio} on every group keeps {best:.3f} (short by {best - self.config.target_ratio:.3f}); "
                "raise max_ratio or target_ratio"
            )

    def _wall(self, ratio: float, remove: bool) -> tuple[float, bool]:
        """AMC's action wall: the smallest decision ≥ ``(ratio, remove)`` that keeps the target reachable."""
        cfg = self.config
        if not cfg.action_wall or (cfg.target == "latency" and self._predictor is None) or remove:
            return ratio, remove
        name = self.group_names[self._index]
        later_groups = self.group_names[self._index + 1 :]
        later = dict.fromkeys(later_groups, cfg.max_ratio)
        later_removed = [self.blocks[g] for g in later_groups if g in self.blocks]

        def fits(r: float, drop: bool = False) -> bool:
            removed = [*self._removed, *later_removed, *([self.blocks[name]] if drop else [])]
            return self._resource({**self._ratios, name: r, **later}, removed) <= cfg.target_ratio + 1e-9

        if fits(ratio):
            return ratio, False
        if not fits(cfg.max_ratio) and name in self.blocks:
            return cfg.max_ratio, True
        lo, hi = ratio, cfg.max_ratio
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if fits(mid) else (mid, hi)
        return hi, False

    # ------------------------------------------------------------------------------------------- gym API

    def _get_obs(self) -> np.ndarray:
        i = min(self._index, self.num_groups - 1)
        macs = self.table.predict(self._ratios, round_to=self.evaluator.config.round_to, removed=self._removed)[0]
        reduced = self.total_macs - macs
        rest = sum(g.group_macs for g in self.groups[i + 1 :])
        return observation(
            self._static,
            index=i,
            macs_reduced=reduced,
            macs_rest=rest,
            total_macs=self.total_macs,
            prev_action=self._prev,
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._ratios, self._removed, self._index, self._prev = {}, [], 0, 0.0
        return self._get_obs(), {"group": self.group_names[0]}

    def action_to_decision(self, action: np.ndarray | float, group: str | None = None) -> tuple[float, bool]:
        """``(ratio, remove)`` of an action for ``group`` (default: the current one), before the action wall."""
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        cfg = self.config
        group = self.group_names[min(self._index, self.num_groups - 1)] if group is None else group
        width = self._ratio_width(group)
        if a + 1.0 > width:
            return cfg.max_ratio, True
        return cfg.min_ratio + (a + 1.0) / width * (cfg.max_ratio - cfg.min_ratio), False

    def _ratio_width(self, group: str) -> float:
        """The part of the action range [-1, 1] that maps to ratios (the rest, at the top, removes the block)."""
        return 2.0 * (1.0 - self.config.remove_band) if group in self.blocks else 2.0

    def action_of(self, ratio: float, *, remove: bool = False, group: str) -> float:
        """The action that :meth:`action_to_decision` maps to ``(ratio, remove)`` for ``group``."""
        cfg = self.config
        if remove and group in self.blocks:
            return 1.0
        width = self._ratio_width(group)
        if cfg.max_ratio <= cfg.min_ratio:
            return -1.0
        return float(np.clip((ratio - cfg.min_ratio) / (cfg.max_ratio - cfg.min_ratio) * width - 1.0, -1.0, 1.0))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._index >= self.num_groups:
            raise RuntimeError("episode is over; call reset()")
        name = self.group_names[self._index]
        ratio, remove = self._wall(*self.action_to_decision(action, name))
        self._ratios[name] = ratio
        if remove:
            self._removed.append(self.blocks[name])
        self._prev = 1.0 if remove else ratio
        self._index += 1
        if self._index < self.num_groups:
            return self._get_obs(), 0.0, False, False, {"group": name, "ratio": ratio, "remove": remove}
        info = self._finish()
        return self._get_obs(), float(info["reward"]), True, False, info

    def _finish(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        lat = self.latency
        result = self.evaluator.evaluate(
            self._ratios, keep_model=lat is not None and lat.needs_model, removed=self._removed
        )
        seconds = dict(result.seconds)
        latency_ms = None
        if lat is not None:
            t = time.perf_counter()
            latency_ms = lat.latency_ms(
                model=result.model, ratios=self._ratios, kept=result.kept, removed=tuple(self._removed)
            )
            seconds["latency"] = time.perf_counter() - t
        inputs = RewardInputs(
            accuracy=result.accuracy / 100.0,
            macs=result.macs,
            params=result.params,
            latency_ms=latency_ms,
            target_ms=self.target_ms,
            latency_weight=self.config.latency_weight,
        )
        reward = float(get_reward(self.config.reward)(inputs))
        if not math.isfinite(reward):
            raise RuntimeError(f"reward is {reward} for policy {self._ratios}")
        seconds["total"] = time.perf_counter() - t0
        return {
            "policy": dict(self._ratios),
            "removed": list(self._removed),
            "reward": reward,
            "accuracy": result.accuracy,
            "top5": result.top5,
            "macs": result.macs,
            "params": result.params,
            "macs_ratio": result.macs / self.table.macs,
            "params_ratio": result.params / self.table.params,
            "latency_ms": latency_ms,
            "latency_ratio": None if latency_ms is None or lat is None else latency_ms / lat.baseline_ms,
            "episode_actions": [
                1.0 if self.blocks.get(g) in self._removed else self._ratios[g] for g in self.group_names
            ],
            "cached": result.cached,
            "seconds": seconds,
        }

    def policy_template(self) -> Policy:
        """A policy with no ratios carrying this env's model, rounding, criterion and input shape."""
        from prunegym.core.models import model_info

        info = model_info(self.evaluator.model)
        return Policy(
            ratios={},
            source="env",
            model=info.name if info else "",
            round_to=self.evaluator.config.round_to,
            criterion=self.evaluator.config.criterion,
            input_shape=self.evaluator.input_shape,
        )

    def policy_from_info(self, info: Mapping[str, Any], *, source: str) -> Policy:
        """The :class:`Policy` of a finished episode, with its measured figures as metrics."""
        keys = ("macs_ratio", "params_ratio", "latency_ms", "latency_ratio", "top5")
        metrics = {k: float(info[k]) for k in keys if info.get(k) is not None}
        return Policy(
            ratios=dict(info["policy"]),
            removed=tuple(info.get("removed") or ()),
            source=source,
            round_to=self.evaluator.config.round_to,
            criterion=self.evaluator.config.criterion,
            input_shape=self.evaluator.input_shape,
            reward=float(info["reward"]),
            accuracy=float(info["accuracy"]),
            metrics=metrics,
        )
