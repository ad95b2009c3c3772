"""Interleaved rounds over several ONNX models, so that load changes on a shared machine hit all of them alike.

Every model gets its session and warm-up up front; then each round visits every model once, in an order
rotated from round to round (:func:`rotated_order`), and times a few runs of each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from prunegym.core.errors import UserError
from prunegym.core.onnxrt.session import OnnxSource
from prunegym.core.onnxrt.timing import LatencyConfig, session_and_feed, time_runs, time_runs_both

__all__ = ["ROTATION_STEP", "Interleaved", "InterleavedTimes", "measure_interleaved", "rotated_order"]

ROTATION_STEP = 7  # how far :class:`Interleaved` rotates the visiting order from one round to the next


def rotated_order(count: int, round_index: int, *, step: int = 1) -> list[int]:
    """The order in which round ``round_index`` visits ``count`` models: ``0..count-1`` rotated left.

    Args:
        count: models per round.
        round_index: the round (0 first).
        step: the rotation from one round to the next.

    Returns:
        Model indices, starting at ``(round_index * step) % count``.
    """
    shift = (round_index * step) % max(count, 1)
    return [*range(shift, count), *range(shift)]


NOISY_CV = 0.10  # spread (coefficient of variation) of per-round ratios above which a figure is flagged as noisy


def round_ratio(numerator: np.ndarray, denominator: np.ndarray) -> tuple[float, float]:
    """The median of per-round ratios ``numerator / denominator`` and their coefficient of variation.

    Both arrays hold one value per interleaved round (e.g. each round's median latency of two models): a busy
    machine slows both models of a round alike, so the per-round ratio is the figure to trust, and its spread
    says how busy the machine was (above :data:`NOISY_CV`: too busy for the figure).

    Args:
        numerator: per-round values of the first model.
        denominator: per-round values of the second model.

    Returns:
        ``(median ratio, coefficient of variation)`` (0 for a single round).
    """
    ratios = np.asarray(numerator, dtype=np.float64) / np.asarray(denominator, dtype=np.float64)
    cv = float(np.std(ratios) / np.mean(ratios)) if len(ratios) > 1 else 0.0
    return float(np.median(ratios)), cv


@dataclass(frozen=True)
class InterleavedTimes:
    """Run times in ms of several models, shape (models, rounds, runs per round), on both clocks."""

    wall_ms: np.ndarray
    cpu_ms: np.ndarray

    def times(self, clock: str) -> np.ndarray:
        """The run times on ``clock`` (``cpu``; anything else is the wall clock)."""
        return self.cpu_ms if clock == "cpu" else self.wall_ms

    def median(self, clock: str) -> np.ndarray:
        """Per model: the median of all its runs (as :func:`~prunegym.core.onnxrt.measure_latency` reports)."""
        t = self.times(clock)
        return np.median(t.reshape(len(t), -1), axis=1)

    def round_medians(self, clock: str) -> np.ndarray:
        """Per model and round: the median of that round's runs (the same model re-measured each round)."""
        return np.median(self.times(clock), axis=2)


class Interleaved:
    """Sessions of several ONNX models, warmed up once, then timed round by round on both clocks.

    Each round visits every model once, in an order rotated by :data:`ROTATION_STEP` from round to round, and
    times ``round_warmup`` untimed plus ``per_round`` timed runs of each.

    Args:
        models: ONNX files or serialized models.
        input_shapes: one C×H×W input shape per model.
        config: provider, threads, batch, up-front warm-up runs (``config.warmup``), graph optimization, seed.
        per_round: timed runs of each model per round.
        round_warmup: untimed runs of each model at the start of its turn in a round.

    Raises:
        ValueError: not one input shape per model.
    """

    def __init__(
        self,
        models: Sequence[OnnxSource],
        *,
        input_shapes: Sequence[Sequence[int]],
        config: LatencyConfig,
        per_round: int,
        round_warmup: int = 2,
    ) -> None:
        if len(models) != len(input_shapes):
            raise ValueError("one input shape per model")
        self.per_round = per_round
        self.round_warmup = round_warmup
        self.sessions, self.feeds = [], []
        for model, shape in zip(models, input_shapes, strict=True):
            s, feed = session_and_feed(model, config=config, input_shape=shape)
            time_runs(s, feed, warmup=config.warmup, repeats=1)
            self.sessions.append(s)
            self.feeds.append(feed)
        self.wall: list[list[np.ndarray]] = [[] for _ in models]
        self.cpu: list[list[np.ndarray]] = [[] for _ in models]

    @property
    def rounds(self) -> int:
        """Rounds timed so far."""
        return len(self.wall[0]) if self.wall else 0

    def run_round(self, *, step: Callable[[], None] | None = None) -> None:
        """Time one round: every model once, in this round's rotated order.

        Args:
            step: called after each model's turn (for progress).
        """
        for i in rotated_order(len(self.sessions), self.rounds, step=ROTATION_STEP):
            wall, cpu = time_runs_both(
                self.sessions[i], self.feeds[i], warmup=self.round_warmup, repeats=self.per_round
            )
            self.wall[i].append(wall)
            self.cpu[i].append(cpu)
            if step is not None:
                step()

    def times(self) -> InterleavedTimes:
        """All rounds timed so far."""
        return InterleavedTimes(wall_ms=np.array(self.wall), cpu_ms=np.array(self.cpu))


def measure_interleaved(
    models: Sequence[OnnxSource],
    *,
    input_shapes: Sequence[Sequence[int]],
    config: LatencyConfig,
    rounds: int,
    repeats: int | None = None,
    round_warmup: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> InterleavedTimes:
    """Time several ONNX models in interleaved rounds, on the wall clock and the thread CPU clock at once.

    Every model gets its session and ``config.warmup`` untimed runs up front; then each round visits the
    models round-robin (in a rotated order) and times ``round_warmup`` untimed plus ``ceil(repeats / rounds)``
    runs of each. The median of all wall-clock runs is the statistic
    :func:`~prunegym.core.onnxrt.measure_latency` reports.

    Args:
        models: ONNX files or serialized models.
        input_shapes: one C×H×W input shape per model.
        config: how to measure (see :class:`Interleaved`).
        rounds: interleaved rounds.
        repeats: timed runs of each model in all; defaults to ``config.repeats``.
        round_warmup: untimed runs of each model at the start of its turn in a round.
        progress: called with (model turns done, model turns in all) after each turn.

    Returns:
        The run times, shape (models, rounds, runs per round).

    Raises:
        UserError: ``rounds`` < 1.
    """
    if rounds < 1:
        raise UserError(f"rounds must be >= 1, got {rounds}")
    per_round = max(1, math.ceil((repeats or config.repeats) / rounds))
    timer = Interleaved(
        models, input_shapes=input_shapes, config=config, per_round=per_round, round_warmup=round_warmup
    )
    done = [0]

    def step() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], rounds * len(models))

    for _ in range(rounds):
        timer.run_round(step=step)
    return timer.times()
