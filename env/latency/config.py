"""How a latency table is profiled (:class:`TableBuildConfig`), its prediction modes and the progress callback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prunegym.core.errors import UserError
from prunegym.core.onnxrt import CLOCKS

__all__ = ["MODES", "Progress", "TableBuildConfig"]

MODES = ("monotone", "aligned")
# A progress callback: (stage, done, total). Build stages: "prepare" (calibration models pruned and exported),
# "layers" (shapes timed), "calibration" (interleaved rounds); check stages: "prune", "measure".
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TableBuildConfig:
    """How a table is profiled.

    Args:
        round_to: channel counts are rounded to this multiple, as the env's evaluator will (empty: the device's
            NCHWc block, which it rewards: 8 with AVX2, 16 with AVX-512 on the CPU provider, else 1).
        max_ratio: the largest ratio the search may choose; counts for ratios in [0, max_ratio] are profiled.
        grid_step: profile every ``grid_step``-th reachable count per axis (plus both ends) and interpolate
            bilinearly between them; 1 profiles every count.
        repeats: timed runs per layer shape, spread over ``rounds`` interleaved rounds (median of all).
        rounds: interleaved rounds over the shapes of one chunk.
        warmup: untimed runs of each micro graph before its first round.
        chunk: micro graphs timed together (interleaved) at a time.
        calib_policies: full models measured to fit the correction: the unpruned model, uniform ratios at half
            and all of max_ratio, aligned counts, blocks removed, then random policies; with fewer than 3 only an
            offset is fitted (0 acts as 1), with 6 or more a curvature term, and a per-removed-block term when some
            of them remove blocks.
        calib_repeats: timed runs of each calibration model, spread over ``calib_rounds`` interleaved rounds.
        calib_rounds: interleaved rounds of the calibration models.
        mode: default prediction mode: monotone (never predicts more time for fewer channels) or aligned (follows
            the SIMD-block alignment effects of the device); both are fitted and stored, a loader may pick either.
        clock: what the table predicts: auto (cpu at 1 CPU thread, else wall), cpu (thread CPU time: immune to
            time-slicing), wall.
        seed: seeds the random calibration policies.
        depth: cover removed residual blocks too (models that have removable blocks): calibration and check
            policies then remove blocks at random; a removed block is its inner group at ratio 1.

    Raises:
        UserError: a value out of range, an unknown mode or clock.
    """

    round_to: int | None = None
    max_ratio: float = 0.8
    grid_step: int = 1
    repeats: int = 200
    rounds: int = 5
    warmup: int = 5
    chunk: int = 64
    calib_policies: int = 16
    calib_repeats: int = 600
    calib_rounds: int = 60
    mode: str = "monotone"
    clock: str = "auto"
    seed: int = 0
    depth: bool = True

    def __post_init__(self) -> None:
        if self.round_to is not None and self.round_to < 1:
            raise UserError(f"round_to must be >= 1, got {self.round_to}")
        if not 0.0 <= self.max_ratio < 1.0:
            raise UserError(f"max_ratio must be in [0, 1), got {self.max_ratio}")
        for name in ("grid_step", "repeats", "rounds", "chunk", "calib_repeats", "calib_rounds"):
            if getattr(self, name) < 1:
                raise UserError(f"latency table {name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0 or self.calib_policies < 0:
            raise UserError("latency table warmup and calib_policies must be >= 0")
        if self.mode not in MODES:
            raise UserError(f"unknown latency table mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.clock not in CLOCKS:
            raise UserError(f"unknown clock {self.clock!r}; use one of {', '.join(CLOCKS)}")
