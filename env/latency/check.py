"""Checking a latency table: predicted vs measured latency of random policies, with the measurement's own noise."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from prunegym.core.onnxrt import InterleavedTimes, LatencyConfig, measure_interleaved, round_ratio
from prunegym.env.latency.calibration import export_model_bytes, prune_model, random_policies
from prunegym.env.latency.config import MODES, Progress
from prunegym.env.latency.predict import PredictedLatency
from prunegym.env.latency.table import LatencyTable

__all__ = ["LatencyCheck", "check_latency_table"]

_MODE_METRICS = (
    "mape_pct",
    "ratio_mape_pct",
    "spearman",
    "bias_pct",
    "mape_drift_corrected_pct",
    "unpruned_predicted_ms",
    "unpruned_measured_ms",
)


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _split_half(times: InterleavedTimes, clock: str) -> float:
    """Rank agreement of the medians of the even and the odd runs of every policy (model 0 left out)."""
    t = times.times(clock)[1:]
    if t.shape[1] < 2:
        return float("nan")
    even = np.median(t[:, 0::2].reshape(len(t), -1), axis=1)
    odd = np.median(t[:, 1::2].reshape(len(t), -1), axis=1)
    return _spearman(even, odd)


def _agreement(
    predicted: np.ndarray, times: InterleavedTimes, clock: str, *, build_ref: float | None, predicted_ref: float
) -> dict[str, float]:
    """Error metrics of ``predicted`` against one clock's medians, that measurement's noise, and the drift.

    Model 0 of ``times`` is the unpruned reference, the rest the policies; ``build_ref`` is the unpruned
    model's latency measured at build time (the drift is measured against it).
    """
    med = times.median(clock)
    ref, m = float(med[0]), med[1:]
    err = (predicted - m) / m
    all_rounds = times.round_medians(clock)
    rounds = all_rounds[1:]
    cv = np.std(rounds, axis=1, ddof=1) / np.median(rounds, axis=1) if rounds.shape[1] > 1 else np.zeros(len(m))
    drift = ref / build_ref if build_ref else float("nan")
    corrected = (predicted * drift - m) / m
    # per round, as every speed-up is reported: a load change hits the policy and the unpruned model alike
    measured_ratio = np.array([round_ratio(r, all_rounds[0])[0] for r in rounds])
    ratio_err = (predicted / predicted_ref - measured_ratio) / measured_ratio
    return {
        "mape_pct": float(np.mean(np.abs(err)) * 100),
        "ratio_mape_pct": float(np.mean(np.abs(ratio_err)) * 100),
        "ratio_max_error_pct": float(np.max(np.abs(ratio_err)) * 100),
        "spearman": _spearman(predicted, m),
        "pearson": float(np.corrcoef(predicted, m)[0, 1]) if len(m) >= 3 else float("nan"),
        "max_abs_error_ms": float(np.max(np.abs(predicted - m))),
        "max_error_pct": float(np.max(np.abs(err)) * 100),
        "bias_pct": float(np.mean(err) * 100),
        "noise_pct": float(np.median(cv) * 100),
        "split_half_spearman": _split_half(times, clock),
        "measured_min_ms": float(np.min(m)),
        "measured_max_ms": float(np.max(m)),
        "unpruned_measured_ms": ref,
        "unpruned_predicted_ms": float(predicted_ref),
        "drift_since_build_pct": (drift - 1.0) * 100,
        "mape_drift_corrected_pct": float(np.mean(np.abs(corrected)) * 100),
    }


@dataclass(frozen=True)
class LatencyCheck:
    """Predicted vs measured latency of random policies, with the measurement's own noise.

    ``clock`` is the table's (what it predicts); ``metrics`` has one entry per clock measured (``cpu`` and
    ``wall`` on the CPU provider at 1 thread, else ``wall``): MAPE, Spearman, Pearson, max error, mean signed
    error (``bias_pct``), ``noise_pct`` (median over policies of the relative std of its per-round medians:
    the same policy re-measured ``rounds`` times) and ``split_half_spearman`` (rank agreement of the medians
    of the even and the odd rounds: how well the measurement agrees with itself, a ceiling for the predictor).
    The unpruned model is measured alongside as a reference: ``drift_since_build_pct`` compares it with its
    measurement at build time (a shared machine's speed drifts with its load), and ``mape_drift_corrected_pct``
    is the MAPE after scaling every prediction by that one factor (nothing is fitted on the checked policies).
    ``ratio_mape_pct`` is the error of what a latency budget uses, the latency *ratio* to the unpruned model:
    predicted ÷ the predictor's baseline against the median over rounds of each round's policy ÷ unpruned time
    (immune to the machine's speed drifting between build and check, and within the check).
    ``modes`` compares the table's prediction modes on the table's clock (``predicted_ms`` is ``mode``'s).
    """

    clock: str
    mode: str
    policies: tuple[Mapping[str, float], ...]
    predicted_ms: tuple[float, ...]
    measured_ms: Mapping[str, tuple[float, ...]]
    round_ms: Mapping[str, tuple[tuple[float, ...], ...]]
    metrics: Mapping[str, Mapping[str, float]]
    modes: Mapping[str, Mapping[str, float]]
    mode_predicted_ms: Mapping[str, tuple[float, ...]]
    rounds: int
    runs_per_round: int
    seconds: Mapping[str, float]

    @property
    def mape_pct(self) -> float:
        """MAPE (%) on the table's clock."""
        return float(self.metrics[self.clock]["mape_pct"])

    @property
    def spearman(self) -> float:
        """Spearman rank correlation on the table's clock."""
        return float(self.metrics[self.clock]["spearman"])

    def summary(self) -> dict[str, Any]:
        """The metrics without the per-policy rows (rounded)."""
        return {
            "policies": len(self.policies),
            "clock": self.clock,
            "mode": self.mode,
            "rounds": self.rounds,
            "runs_per_round": self.runs_per_round,
            "metrics": {c: {k: round(v, 4) for k, v in m.items()} for c, m in self.metrics.items()},
            "modes": {md: {k: round(v, 4) for k, v in m.items()} for md, m in self.modes.items()},
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        """:meth:`summary` plus one row per policy (its ratios, predictions and measurements)."""
        rows = []
        for i, (p, a) in enumerate(zip(self.policies, self.predicted_ms, strict=True)):
            rows.append(
                {
                    "policy": {g: round(r, 4) for g, r in p.items()},
                    "predicted_ms": round(a, 5),
                    **{f"predicted_{md}_ms": round(v[i], 5) for md, v in self.mode_predicted_ms.items()},
                    **{f"measured_{c}_ms": round(v[i], 5) for c, v in self.measured_ms.items()},
                }
            )
        return {**self.summary(), "rows": rows}


def _export_candidates(
    model: nn.Module,
    policies: Sequence[Mapping[str, float]],
    *,
    input_shape: Sequence[int],
    round_to: int,
    progress: Progress | None,
    blocks: Mapping[str, str] | None = None,
) -> list[bytes]:
    """The unpruned model, then each policy's pruned model, as serialized ONNX."""
    graphs = [export_model_bytes(model, input_shape)]  # the unpruned reference
    for i, pol in enumerate(policies):
        net = prune_model(model, pol, input_shape=input_shape, round_to=round_to, blocks=blocks)
        graphs.append(export_model_bytes(net, input_shape))
        if progress is not None:
            progress("prune", i + 1, len(policies))
    return graphs


def _table_latency(table: LatencyTable) -> LatencyConfig:
    """The provider, threads, batch and graph optimization the table was profiled with."""
    dev = table.device
    return LatencyConfig(
        provider=str(dev["provider"]),
        intra_op_threads=int(dev["threads"]),
        batch_size=int(dev["batch_size"]),
        graph_optimization=str(dev.get("graph_optimization", "all")),
    )


def _compare_modes(
    predictor: PredictedLatency,
    policies: Sequence[Mapping[str, float]],
    times: InterleavedTimes,
    clock: str,
    *,
    build_ref: float | None,
) -> tuple[dict[str, dict[str, float]], dict[str, tuple[float, ...]]]:
    """Each prediction mode's key metrics on ``clock`` and its predictions of ``policies``."""
    modes, mode_pred = {}, {}
    for md in MODES:
        other = (
            predictor
            if md == predictor.mode
            else PredictedLatency(table=predictor.table, group_order=predictor.group_order, mode=md)
        )
        pm = np.array([other.predict(p) for p in policies])
        mode_pred[md] = tuple(float(v) for v in pm)
        met = _agreement(pm, times, clock, build_ref=build_ref, predicted_ref=other.baseline_ms)
        modes[md] = {k: met[k] for k in _MODE_METRICS}
    return modes, mode_pred


def check_latency_table(
    *,
    predictor: PredictedLatency,
    model: nn.Module,
    input_shape: Sequence[int],
    policies: int = 50,
    seed: int = 1,
    max_ratio: float | None = None,
    rounds: int = 100,
    repeats: int = 1000,
    latency: LatencyConfig | None = None,
    progress: Progress | None = None,
) -> LatencyCheck:
    """Predict and measure ``policies`` random policies (each ratio uniform in [0, max_ratio]).

    Each pruned model (:func:`~prunegym.core.pruning.apply_policy`, the table's round_to) is exported to ONNX
    and timed with the table's provider, threads and batch; the models are interleaved over ``rounds`` rounds
    (``repeats`` runs each in all). Measured = the median of all runs, on each clock.

    Args:
        predictor: the table's predictor.
        model: the unpruned model the table was built for.
        input_shape: C×H×W of one input.
        policies: how many random policies.
        seed: seeds the policies.
        max_ratio: the largest ratio; defaults to the table's.
        rounds: interleaved rounds.
        repeats: timed runs of each model in all.
        latency: how to measure; defaults to the table's device settings.
        progress: called with ("prune", done, total) while exporting and ("measure", done, total) while timing.

    Returns:
        The check.
    """
    table = predictor.table
    t0 = time.perf_counter()
    max_ratio = float(table.search["max_ratio"]) if max_ratio is None else max_ratio
    round_to = int(table.search["round_to"])
    clock = str(table.search.get("clock", "wall"))
    blocks = predictor.blocks
    pols = random_policies(predictor.group_order, count=policies, max_ratio=max_ratio, seed=seed, blocks=blocks)
    predicted = np.array([predictor.predict(p) for p in pols])
    t_pred = time.perf_counter() - t0
    t = time.perf_counter()
    graphs = _export_candidates(
        model, pols, input_shape=input_shape, round_to=round_to, progress=progress, blocks=blocks
    )
    t_prune = time.perf_counter() - t
    cfg = latency or _table_latency(table)
    t = time.perf_counter()
    times = measure_interleaved(
        graphs,
        input_shapes=[input_shape] * len(graphs),
        config=cfg,
        rounds=rounds,
        repeats=repeats,
        progress=(lambda d, n: progress("measure", d, n)) if progress else None,
    )
    t_measure = time.perf_counter() - t
    clocks = (clock, "wall") if clock == "cpu" else (clock,)
    build_ref = table.calibration.get("measured_baseline_ms")
    modes, mode_pred = _compare_modes(predictor, pols, times, clock, build_ref=build_ref)
    return LatencyCheck(
        clock=clock,
        mode=predictor.mode,
        policies=tuple(pols),
        predicted_ms=tuple(float(v) for v in predicted),
        modes=modes,
        mode_predicted_ms=mode_pred,
        measured_ms={c: tuple(float(v) for v in times.median(c)[1:]) for c in clocks},
        round_ms={c: tuple(tuple(float(x) for x in r) for r in times.round_medians(c)[1:]) for c in clocks},
        metrics={
            c: _agreement(predicted, times, c, build_ref=build_ref, predicted_ref=predictor.baseline_ms) for c in clocks
        },
        rounds=rounds,
        runs_per_round=int(times.wall_ms.shape[2]),
        seconds={"predict": t_pred, "prune+export": t_prune, "measure": t_measure, "total": time.perf_counter() - t0},
    )
