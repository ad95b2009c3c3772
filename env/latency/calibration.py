"""The table's correction, fitted on measured full models (the calibration), and the policies it measures.

The sum of the per-layer times misses what no single layer owns (the stem's input, residual additions,
pooling, layout reorders between layers, the runtime's per-run overhead) and over-counts each micro graph's
own overhead (its session run, and on x86 CPUs the reorders into and out of ONNX Runtime's blocked NCHWc
layout, which a chain of aligned layers in the full model does not pay). A correction is therefore fitted on
the measured latency of a dozen calibration models (the unpruned model, uniform ratios, channel counts
aligned to the SIMD block, random policies), whose interleaved rounds are spread over the profiling so
that the layer timings and the full models see the same shared machine.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from torch import nn

from prunegym.core.onnx_export import export_onnx_bytes
from prunegym.core.onnxrt import Interleaved, LatencyConfig
from prunegym.core.policy import Policy
from prunegym.core.pruning import apply_policy
from prunegym.core.remote import RemoteDevice, RemoteInterleaved
from prunegym.env.latency.config import MODES, Progress, TableBuildConfig
from prunegym.env.latency.predict import LayerSums, table_kept
from prunegym.env.latency.table import LatencyTable

__all__ = [
    "Calibration",
    "calibration_policies",
    "export_model_bytes",
    "fit_line",
    "fit_two",
    "prune_model",
    "random_policies",
]

log = logging.getLogger(__name__)

_SLOPES = (0.2, 5.0)  # a fitted slope outside this range is implausible


REMOVE_P = 0.35  # chance that a random depth policy removes each removable block


def random_policies(
    groups: Mapping[str, int] | Sequence[str],
    *,
    count: int,
    max_ratio: float,
    seed: int,
    blocks: Mapping[str, str] | None = None,
) -> list[dict[str, float]]:
    """``count`` policies with every group's ratio uniform in [0, max_ratio].

    With ``blocks`` (removable block → inner group), each block is also removed with probability
    :data:`REMOVE_P`, written as its inner group at ratio 1.0 (what :class:`PredictedLatency` and
    :func:`prune_model` read as "removed").

    Args:
        groups: the group names (or group → channels).
        count: how many policies.
        max_ratio: the largest ratio.
        seed: seeds the generator.
        blocks: the removable blocks and their inner groups, for depth policies.

    Returns:
        The policies, group → ratio.
    """
    rng = np.random.default_rng(seed)
    names = list(groups)
    pols = [
        {g: float(r) for g, r in zip(names, rng.uniform(0.0, max_ratio, len(names)), strict=True)} for _ in range(count)
    ]
    if blocks:
        inner = list(blocks.values())
        for pol, drops in zip(pols, rng.random((count, len(inner))) < REMOVE_P, strict=True):
            pol.update({g: 1.0 for g, drop in zip(inner, drops, strict=True) if drop})
    return pols


def split_removed(ratios: Mapping[str, float], blocks: Mapping[str, str]) -> tuple[dict[str, float], tuple[str, ...]]:
    """``(ratios, removed blocks)`` of a latency-code policy, where a block's inner group at ratio ≥ 1 removes it."""
    removed = tuple(b for b, g in blocks.items() if ratios.get(g, 0.0) >= 1.0)
    gone = {blocks[b] for b in removed}
    return {g: r for g, r in ratios.items() if g not in gone}, removed


def calibration_policies(
    channels: Mapping[str, int],
    *,
    count: int,
    max_ratio: float,
    seed: int,
    block: int,
    blocks: Mapping[str, str] | None = None,
) -> list[dict[str, float]]:
    """The calibration models' policies.

    Args:
        channels: group → unpruned channel count.
        count: how many policies (at least 1).
        max_ratio: the largest ratio.
        seed: seeds the random policies.
        block: the NCHWc block (> 1 adds the aligned policy).
        blocks: removable block → inner group; the random policies then remove blocks too.

    Returns:
        The unpruned model, uniform ratios at 1/2 and 1 × max_ratio, every group cut to a multiple of ``block``
        near 60 % of its channels (when ``block`` > 1), every other block removed (with ``blocks``), then random
        policies, up to ``count`` in all.
    """
    groups = list(channels)
    fixed = [dict.fromkeys(groups, 0.0), dict.fromkeys(groups, max_ratio / 2), dict.fromkeys(groups, max_ratio)]
    if block > 1:
        aligned = {}
        for g, n in channels.items():
            lowest = math.floor(n * (1.0 - max_ratio) + 1e-6)
            k = block * max(1, round(n * 0.6 / block))
            aligned[g] = 1.0 - k / n if lowest <= k < n else 0.0
        fixed.append(aligned)
    if blocks:
        fixed.append({**dict.fromkeys(groups, 0.0), **{g: 1.0 for g in list(blocks.values())[::2]}})
    pols = fixed[: max(1, count)]
    rest = max(0, count - len(fixed))
    return pols + random_policies(groups, count=rest, max_ratio=max_ratio, seed=seed + 7919, blocks=blocks)


def prune_model(
    model: nn.Module,
    ratios: Mapping[str, float],
    *,
    input_shape: Sequence[int],
    round_to: int,
    blocks: Mapping[str, str] | None = None,
) -> nn.Module:
    """``model`` pruned with ``ratios`` (``model`` itself when no ratio is positive); with ``blocks``, a block's
    inner group at ratio 1 removes the block (:func:`split_removed`)."""
    if not any(r > 0 for r in ratios.values()):
        return model
    kept, removed = split_removed(ratios, blocks or {})
    return apply_policy(model, Policy(ratios=kept, removed=removed), input_shape=tuple(input_shape), round_to=round_to)


def export_model_bytes(model: nn.Module, input_shape: Sequence[int]) -> bytes:
    """A full model as serialized ONNX (dynamic batch), ready for an ONNX Runtime session."""
    return export_onnx_bytes(model, input_shape=input_shape)


def _r2_mape(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    ss = float(np.sum((y - np.mean(y)) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else 1.0
    return r2, float(np.mean(np.abs(pred - y) / y) * 100.0)


def _relative_lstsq(columns: Sequence[np.ndarray], y: np.ndarray) -> np.ndarray:
    """``[intercept, *coefficients]`` minimising the squared *relative* errors (rows weighted by 1/y)."""
    design = np.stack([np.ones_like(y), *columns], axis=1)
    w = 1.0 / y
    return np.linalg.lstsq(design * w[:, None], y * w, rcond=None)[0]


def _extra_terms(total: np.ndarray, y: np.ndarray, removed: np.ndarray | None, *, base: int) -> dict[str, np.ndarray]:
    """The optional terms the points can carry (two spare degrees of freedom each): ``curve`` (the table sum
    squared) and ``block_ms`` (removed blocks, when some models remove blocks)."""
    extra: dict[str, np.ndarray] = {}
    if len(y) >= base + 1 + 3 and np.ptp(total) > 0.2 * np.mean(total):
        extra["curve"] = total**2
    if removed is not None and np.ptp(removed) > 0 and len(y) >= base + len(extra) + 1 + 3:
        extra["block_ms"] = np.asarray(removed, dtype=np.float64)
    return extra


def _plausible(fit: Mapping[str, float], slopes: Sequence[str], total: np.ndarray, y: np.ndarray) -> bool:
    """Every table-ms costs between 0.2 and 5 ms over [0, the largest sum] (the curve included), and a removed
    block a few operators' fixed cost (at most 5% of the slowest model)."""
    top = float(np.max(total))
    ok = all(_SLOPES[0] <= fit[k] + 2.0 * fit.get("curve", 0.0) * x <= _SLOPES[1] for k in slopes for x in (0.0, top))
    return ok and abs(fit.get("block_ms", 0.0)) <= 0.05 * float(np.max(y))


def _fit(
    sums: Mapping[str, np.ndarray], y: np.ndarray, removed: np.ndarray | None
) -> tuple[dict[str, float], np.ndarray] | None:
    """Relative least squares on ``sums`` (named columns) plus the extra terms that are plausible, dropping the
    extras (block term first, then the curve) when the fit with them is not; ``None`` when even the plain fit
    is implausible. Returns the coefficients and the fitted values."""
    total = np.sum(list(sums.values()), axis=0)
    extra = _extra_terms(total, y, removed, base=len(sums))
    names = [*extra]
    while True:
        cols = {**sums, **{k: extra[k] for k in names}}
        coef = _relative_lstsq(list(cols.values()), y)
        fit = {"intercept": float(coef[0]), **{k: float(c) for k, c in zip(cols, coef[1:], strict=True)}}
        if _plausible(fit, list(sums), total, y):
            pred = coef[0] + sum(c * col for c, col in zip(coef[1:], cols.values(), strict=True))
            return {**fit, **{k: 0.0 for k in ("curve", "block_ms") if k not in fit}}, pred
        if not names:
            return None
        log.warning("calibration with %s is implausible (%s); fitting without %s", names, fit, names[-1])
        names.pop()


def fit_line(x: np.ndarray, y: np.ndarray, *, removed: np.ndarray | None = None) -> dict[str, Any]:
    """``measured ≈ intercept + slope * s + curve * s² + block_ms * removed_blocks`` for table sums ``s``,
    least squares on relative errors; offset-only when no slope is usable.

    ``curve`` lets larger models pay more per table-ms (their weights outgrow the caches that the micro graphs
    and the pruned models fit in); ``block_ms`` is what a removed block still costs beyond the table, which drops
    every layer of the block with its micro graph's own overhead. Each is fitted only when the points can carry
    it (two spare degrees of freedom) and kept only when plausible.

    Args:
        x: table sums (ms).
        y: measured latencies (ms).
        removed: removed blocks per model.

    Returns:
        ``method`` (``linear`` or ``offset``), ``intercept``, ``slope``, ``curve``, ``block_ms``, ``r2`` and
        ``mape_pct``.
    """
    fit, pred, method = None, None, "offset"
    if len(x) >= 3 and np.ptp(x) > 0.05 * np.mean(x):
        found = _fit({"slope": x}, y, removed)
        if found is None:
            log.warning("calibration slope is implausible; falling back to an offset")
        else:
            (fit, pred), method = found, "linear"
    if fit is None:
        fit = {"intercept": float(np.mean(y - x)), "slope": 1.0, "curve": 0.0, "block_ms": 0.0}
        pred = fit["intercept"] + x
    r2, mape = _r2_mape(pred, y)
    return {"method": method, **fit, "r2": r2, "mape_pct": mape}


def fit_two(
    aligned: np.ndarray, other: np.ndarray, y: np.ndarray, *, removed: np.ndarray | None = None
) -> dict[str, Any]:
    """``measured ≈ intercept + slope_aligned * aligned + slope_other * other + curve * total² + block_ms *
    removed_blocks`` (as :func:`fit_line`); one line (:func:`fit_line`) when the two slopes are not identifiable.

    Args:
        aligned: table sums of the NCHWc-aligned layers (ms).
        other: table sums of the other layers (ms).
        y: measured latencies (ms).
        removed: removed blocks per model.

    Returns:
        ``method`` ``two-slope`` with ``intercept``, ``slope_aligned``, ``slope_other``, ``curve``, ``block_ms``,
        ``r2``, ``mape_pct``; else :func:`fit_line` of the total.
    """
    total = aligned + other
    if len(y) >= 4 and min(np.ptp(aligned), np.ptp(other)) > 0.05 * np.mean(total):
        found = _fit({"slope_aligned": aligned, "slope_other": other}, y, removed)
        if found is not None:
            fit, pred = found
            r2, mape = _r2_mape(pred, y)
            return {"method": "two-slope", **fit, "r2": r2, "mape_pct": mape}
        log.warning("calibration's two slopes are implausible; fitting one line")
    return fit_line(total, y, removed=removed)


def _policy_names(count: int, block: int) -> list[str]:
    names = ["unpruned", "uniform half", "uniform max", "aligned"][: min(count, 4 if block > 1 else 3)]
    return names + [f"random {i}" for i in range(count - len(names))]


class Calibration:
    """The calibration models, pruned and exported up front, timed in interleaved rounds, and the fit.

    Rounds are timed whenever :meth:`run` is called (between the layer chunks, so that the layer timings and
    the full models see the same shared machine); :meth:`fit` fits both modes' corrections on them.

    Args:
        model: the unpruned model.
        channels: group → unpruned channel count.
        blocks: removable block → inner group (empty: no depth policies).
        input_shape: C×H×W of one input.
        config: the table's build settings (policies, repeats, rounds, round_to, seed).
        latency: provider, threads, batch, warm-up, graph optimization and seed of the measurement.
        block: the NCHWc block.
        progress: called with ("prepare", done, total) while exporting and ("calibration", ...) per round.
        remote: time the calibration models on this remote device (all rounds in one job, when first read).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        channels: Mapping[str, int],
        input_shape: Sequence[int],
        config: TableBuildConfig,
        blocks: Mapping[str, str] | None = None,
        latency: LatencyConfig,
        block: int,
        progress: Progress | None,
        remote: RemoteDevice | None = None,
    ) -> None:
        self.blocks = dict(blocks or {})
        self.policies = calibration_policies(
            channels,
            count=max(1, config.calib_policies),
            max_ratio=config.max_ratio,
            seed=config.seed,
            block=block,
            blocks=self.blocks,
        )
        self.config = config
        self.progress = progress
        graphs = []
        for i, pol in enumerate(self.policies):
            net = prune_model(model, pol, input_shape=input_shape, round_to=config.round_to, blocks=self.blocks)
            graphs.append(export_model_bytes(net, input_shape))
            if progress is not None:
                progress("prepare", i + 1, len(self.policies))
        cfg = LatencyConfig(
            provider=latency.provider,
            intra_op_threads=latency.intra_op_threads,
            inter_op_threads=latency.inter_op_threads,
            batch_size=latency.batch_size,
            warmup=latency.warmup,
            graph_optimization=latency.graph_optimization,
            seed=latency.seed,
            runtime=latency.runtime,
        )
        per_round = max(1, math.ceil(config.calib_repeats / config.calib_rounds))
        shapes = [tuple(input_shape)] * len(graphs)
        self.timer: Interleaved | RemoteInterleaved = (
            Interleaved(graphs, input_shapes=shapes, config=cfg, per_round=per_round)
            if remote is None
            else RemoteInterleaved(remote, graphs, input_shapes=shapes, config=cfg, per_round=per_round)
        )

    @property
    def rounds(self) -> int:
        """Rounds timed so far."""
        return self.timer.rounds

    def run(self, rounds: int) -> None:
        """Time ``rounds`` more interleaved rounds (none when ``rounds`` <= 0)."""
        for _ in range(max(0, rounds)):
            self.timer.run_round()
            if self.progress is not None:
                self.progress("calibration", self.rounds, self.config.calib_rounds)

    def fit(self, table: LatencyTable) -> LatencyTable:
        """``table`` with both modes' corrections fitted on the calibration models' medians (on its clock)."""
        clock = str(table.search["clock"])
        y = np.asarray(self.timer.times().median(clock), dtype=np.float64)
        block = int(table.search.get("align_block", 1))
        mono = LayerSums(table, group_order=tuple(table.groups), monotone=True, block=1)
        raw = LayerSums(table, group_order=tuple(table.groups), monotone=False, block=block)
        rows, sums_mono, sums_a, sums_o, removed = [], [], [], [], []
        for name, pol, ms in zip(_policy_names(len(self.policies), block), self.policies, y, strict=True):
            kept = table_kept(table, pol)
            m = sum(mono.sums(kept))
            a, o = raw.sums(kept)
            sums_mono.append(m)
            sums_a.append(a)
            sums_o.append(o)
            removed.append(len(split_removed(pol, self.blocks)[1]))
            rows.append(
                {
                    "policy": name,
                    "measured_ms": round(float(ms), 5),
                    "sum_monotone_ms": round(m, 5),
                    "sum_aligned_ms": round(a, 5),
                    "sum_other_ms": round(o, 5),
                    "removed_blocks": removed[-1],
                }
            )
        r = np.array(removed, dtype=np.float64)
        cal: dict[str, Any] = {
            "default": self.config.mode,
            "monotone": {
                **fit_line(np.array(sums_mono), y, removed=r),
                "cap_ms": round(float(y[0]), 5),
            },
            "aligned": fit_two(np.array(sums_a), np.array(sums_o), y, removed=r),
            "measured_baseline_ms": round(float(y[0]), 5),
            "policies": len(self.policies),
            "rounds": self.rounds,
            "points": rows,
        }
        for mode in MODES:
            f = cal[mode]
            log.info(
                "calibration (%s) on %d models: %s, R² %.3f, MAPE %.2f%%",
                mode,
                len(y),
                ", ".join(
                    f"{k} {v:.4f}" for k, v in f.items() if k.startswith(("intercept", "slope", "curve", "block"))
                ),
                f["r2"],
                f["mape_pct"],
            )
        return replace(table, calibration=cal)
