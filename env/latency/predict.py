"""Predicted latency: per-layer lookups in a :class:`~prunegym.env.latency.table.LatencyTable`, corrected.

Predicting needs no model and no ONNX export: ~55 lookups, tens of microseconds. Two prediction modes are
fitted at build time:

- ``monotone`` (default): each layer's grid made monotone in its channel counts (the mean of its running
  maximum from below and running minimum from above) and ``min(intercept + slope * sum, unpruned measured)``:
  the prediction never rises when a ratio grows.
- ``aligned``: the raw grids and a separate slope for layers whose channel counts are multiples of the NCHWc
  block (:func:`nchwc_block`): follows the device where e.g. 64 channels run faster than 63.
"""

from __future__ import annotations

import bisect
import logging
import math
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from prunegym.core.errors import UserError
from prunegym.core.onnxrt import LatencyConfig
from prunegym.core.pruning import kept_channels
from prunegym.core.pruning.depth import inside
from prunegym.env.latency.config import MODES
from prunegym.env.latency.grids import shrink_features
from prunegym.env.latency.table import REBUILD, LatencyTable, LayerEntry, device_info

__all__ = ["LayerLookup", "LayerSums", "PredictedLatency", "nchwc_block", "table_kept"]

log = logging.getLogger(__name__)

_CACHE_SIZE = 65536  # predictions cached by kept counts before the cache is cleared


def _monotone(grid: np.ndarray) -> np.ndarray:
    """A grid non-decreasing along both axes: the mean of its running max from below and running min from above."""
    upper = np.maximum.accumulate(np.maximum.accumulate(grid, axis=0), axis=1)
    lower = np.minimum.accumulate(np.minimum.accumulate(grid[::-1, ::-1], axis=0), axis=1)[::-1, ::-1]
    return (upper + lower) / 2.0


def _bracket(axis: Sequence[int], v: int) -> tuple[int, int, float]:
    """Indices ``i <= j`` around ``v`` in ``axis`` and the weight of ``j`` (outside: linear extrapolation)."""
    n = len(axis)
    if n == 1:
        return 0, 0, 0.0
    j = min(max(bisect.bisect_left(axis, v), 1), n - 1)
    i = j - 1
    if axis[j] == v:
        return j, j, 0.0
    return i, j, (v - axis[i]) / (axis[j] - axis[i])


class LayerLookup:
    """Fast per-layer lookup: channel counts from the groups' kept counts, then bilinear interpolation.

    Args:
        entry: the layer's table entry.
        points: its signature's ``{(cin, cout): ms}``.
        channels: group → unpruned channel count.
        monotone: make the grid monotone in both counts first.
    """

    def __init__(
        self, entry: LayerEntry, points: Mapping[tuple[int, int], float], *, channels: Mapping[str, int], monotone: bool
    ) -> None:
        self.name = entry.name
        self.entry = entry
        self.in_links = [(g, c, channels[g]) for g, c in entry.in_groups]
        self.out_link = (
            (entry.out_group[0], entry.out_group[1], channels[entry.out_group[0]]) if entry.out_group else None
        )
        self.diagonal = entry.diagonal
        self.in_axis = list(entry.in_axis)
        self.out_axis = list(entry.out_axis)
        if self.diagonal:
            grid = np.array([[points[(c, c)] for c in self.out_axis]], dtype=np.float64)
        else:
            grid = np.array([[points[(i, o)] for o in self.out_axis] for i in self.in_axis], dtype=np.float64)
        self.grid = (_monotone(grid) if monotone else grid).tolist()
        self.min_in, self.min_out = self.in_axis[0], self.out_axis[0]
        self.last = (entry.in_features, entry.out_features)

    def channels(self, kept: Mapping[str, int]) -> tuple[int, int]:
        """The layer's (cin, cout) when the groups keep ``kept`` (group → count)."""
        if self.diagonal:
            cout = self.entry.out_features
            if self.out_link is not None:
                g, c, n = self.out_link
                cout = shrink_features(cout, c, n, kept[g])
            return cout, cout
        cin = self.entry.in_features
        for g, c, n in self.in_links:
            cin = shrink_features(cin, c, n, kept[g])
        cout = self.entry.out_features
        if self.out_link is not None:
            g, c, n = self.out_link
            cout = shrink_features(cout, c, n, kept[g])
        return cin, cout

    def ms(self, kept: Mapping[str, int]) -> tuple[float, bool]:
        """Predicted ms and whether a count lies below the profiled range (extrapolated); sets ``last``."""
        cin, cout = self.channels(kept)
        self.last = (cin, cout)
        g = self.grid
        j0, j1, tj = _bracket(self.out_axis, cout)
        if self.diagonal:
            v = g[0][j0] * (1 - tj) + g[0][j1] * tj
            return max(v, 0.0), cout < self.min_out
        i0, i1, ti = _bracket(self.in_axis, cin)
        a = g[i0][j0] * (1 - tj) + g[i0][j1] * tj
        b = g[i1][j0] * (1 - tj) + g[i1][j1] * tj
        return max(a * (1 - ti) + b * ti, 0.0), cin < self.min_in or cout < self.min_out


def nchwc_block(provider: str) -> int:
    """Channel block of ONNX Runtime's NCHWc convolutions on this CPU (16 with AVX-512, 8 with AVX/AVX2), else 1.

    Convs whose input and output channel counts are multiples of it run in the blocked layout, where a chain of
    them needs no layout reorders between layers; a micro graph of one such layer still pays a reorder at its
    input and output. The ``aligned`` mode gives those layers their own correction slope.

    Args:
        provider: the execution provider's full name.

    Returns:
        16, 8 or 1.
    """
    if provider != "CPUExecutionProvider" or platform.machine().lower() not in {"x86_64", "amd64"}:
        return 1
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 1
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    if "avx512f" in flags:
        return 16
    return 8 if "avx" in flags or "avx2" in flags else 1


def table_kept(
    table: LatencyTable, ratios: Mapping[str, float], *, group_order: Sequence[str] | None = None
) -> tuple[int, ...]:
    """Kept channel counts of ``ratios`` at the table's round_to, in ``group_order`` (default: the table's groups).

    The inner group of a block the table covers at ratio ≥ 1 keeps 0 channels: the block is removed.
    """
    rt = int(table.search["round_to"])
    inner = set((table.search.get("blocks") or {}).values())
    return tuple(
        0
        if g in inner and float(ratios.get(g, 0.0)) >= 1.0
        else kept_channels(table.groups[g], float(ratios.get(g, 0.0)), rt, name=g)
        for g in (table.groups if group_order is None else group_order)
    )


class LayerSums:
    """Per-layer table times of a candidate, summed separately over NCHWc-aligned and other layers.

    A removable block whose inner group keeps 0 channels is removed: its layers cost nothing.

    Args:
        table: the table.
        group_order: the order of the kept counts passed to :meth:`sums`.
        monotone: use monotone grids.
        block: the NCHWc block (1: every layer counts as "other").
    """

    def __init__(self, table: LatencyTable, *, group_order: Sequence[str], monotone: bool, block: int) -> None:
        self.group_order = tuple(group_order)
        self.block = block
        self.layers = [
            LayerLookup(e, table.signatures[e.signature]["points"], channels=table.groups, monotone=monotone)
            for e in table.layers
        ]
        blocks = dict(table.search.get("blocks") or {})
        self.inner = [next((g for b, g in blocks.items() if inside(la.name, (b,))), None) for la in self.layers]
        self.outside = False

    def sums(self, kept: Sequence[int]) -> tuple[float, float]:
        """(aligned, other) sums in ms for kept counts in ``group_order``; sets ``outside`` on extrapolation."""
        counts = dict(zip(self.group_order, kept, strict=True))
        aligned = other = 0.0
        b = self.block
        for la, inner in zip(self.layers, self.inner, strict=True):
            if inner is not None and counts[inner] == 0:
                continue  # the block is removed
            ms, out = la.ms(counts)
            self.outside |= out
            cin, cout = la.last
            if b > 1 and cin % b == 0 and cout % b == 0:
                aligned += ms
            else:
                other += ms
        return aligned, other


class PredictedLatency:
    """Latency in ms predicted from a :class:`~prunegym.env.latency.table.LatencyTable`.

    Two modes, both fitted at build time on the same measurements
    (:func:`~prunegym.env.latency.calibration.fit_line`); ``R`` is the number of removed blocks:

    - ``monotone``: each layer's grid made monotone, ``min(intercept + slope * sum + curve * sum² + block_ms * R,
      cap_ms)``: more channels never predict less time (the fit keeps the curve's slope positive, and a removed
      block's ``block_ms`` is a few operators' cost, far below its layers'), whatever the device does at
      particular channel counts. ``cap_ms`` is the unpruned model's measured latency: no candidate is predicted
      slower than it.
    - ``aligned``: raw grids, ``intercept + slope_aligned * sum(aligned layers) + slope_other * sum(others) +
      curve * sum² + block_ms * R`` (:func:`nchwc_block`): follows the device where channel counts that fill the
      SIMD blocks are faster than smaller unaligned ones, so the prediction may rise when a ratio grows past such
      a count.

    ``baseline_ms`` is the prediction for the unpruned model, so latency ratios of the env are 1 there.
    Needs no model (``needs_model = False``); a prediction takes tens of microseconds.

    Args:
        table: the table.
        group_order: the order of kept counts in :meth:`predict_kept`; defaults to the table's groups.
        mode: ``monotone`` or ``aligned``; defaults to the table's default.

    Raises:
        UserError: a group the table lacks, or an unknown mode.
    """

    needs_model = False

    def __init__(
        self, *, table: LatencyTable, group_order: Sequence[str] | None = None, mode: str | None = None
    ) -> None:
        self.table = table
        self.group_order = tuple(group_order) if group_order is not None else tuple(table.groups)
        unknown = [g for g in self.group_order if g not in table.groups]
        if unknown:
            raise UserError(f"latency table has no group '{unknown[0]}'; {REBUILD} for this model")
        cal = table.calibration
        self.mode = mode or str(cal.get("default", table.search.get("mode", "monotone")))
        if self.mode not in MODES:
            raise UserError(f"unknown latency table mode {self.mode!r}; use one of {', '.join(MODES)}")
        fit = cal.get(self.mode) or {}
        self.intercept = float(fit.get("intercept", 0.0))
        self.slope_aligned = float(fit.get("slope_aligned", fit.get("slope", 1.0)))
        self.slope_other = float(fit.get("slope_other", fit.get("slope", 1.0)))
        self.curve = float(fit.get("curve", 0.0))
        self.block_ms = float(fit.get("block_ms", 0.0))
        self.cap_ms = float(fit["cap_ms"]) if fit.get("cap_ms") else math.inf
        block = int(table.search.get("align_block", 1)) if self.mode == "aligned" else 1
        self._summer = LayerSums(table, group_order=self.group_order, monotone=self.mode == "monotone", block=block)
        self._layers = self._summer.layers
        inner = set(self.blocks.values())
        self._inner_index = [i for i, g in enumerate(self.group_order) if g in inner]
        self._cache: dict[tuple[int, ...], float] = {}
        self._warned = False
        self.baseline_ms = self.predict_kept(tuple(table.groups[g] for g in self.group_order))

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        evaluator: Any,
        provider: str = "cpu",
        threads: int = 1,
        batch_size: int | None = None,
        runtime: str = "ort",
    ) -> PredictedLatency:
        """Read a table and check it fits the evaluator's model, input shape and rounding and this device.

        Args:
            path: the table file.
            evaluator: the env's evaluator (its ``model``, ``input_shape``, ``config.round_to``, ``table``).
            provider: the provider the run would measure with.
            threads: the intra-op threads the run would measure with.
            batch_size: the batch the run would measure with; defaults to the table's.
            runtime: the runtime the run would measure with.

        Returns:
            The predictor, in the evaluator's group order.

        Raises:
            UserError: (one line) another model, input shape, rounding, provider, threads, batch, CPU or
                onnxruntime version than the table's.
        """
        table = LatencyTable.read(path)
        source = f"latency table {path}"
        table.check_model(evaluator.model, input_shape=evaluator.input_shape, source=source)
        here = device_info(
            config=LatencyConfig(
                provider=provider,
                intra_op_threads=threads,
                batch_size=batch_size or int(table.device.get("batch_size", 1)),
                graph_optimization=str(table.device.get("graph_optimization", "all")),
                runtime=runtime,
            )
        )
        if table.device.get("remote_device"):  # profiled for a device elsewhere: it predicts that device, not this one
            log.info("%s was profiled on remote device %s", source, table.device["remote_device"])
        else:
            table.check_device(here, source=source)
        table.check_round_to(int(evaluator.config.round_to), source=source)
        groups = tuple(evaluator.table.channels)
        if dict(evaluator.table.channels) != dict(table.groups):
            raise UserError(f"{source} lists other prunable groups than this model's; {REBUILD} for this model")
        pred = cls(table=table, group_order=groups)
        log.info(
            "predicted latency from %s: baseline %.3f ms (%d layers, %s, %d thread(s))",
            path,
            pred.baseline_ms,
            len(table.layers),
            table.device.get("provider"),
            table.device.get("threads"),
        )
        return pred

    # -- predictions

    def sums(self, kept: Sequence[int]) -> tuple[float, float]:
        """Uncorrected table times (ms) of the aligned and the other layers for kept counts (in ``group_order``)."""
        out = self._summer.sums(kept)
        if self._summer.outside and not self._warned:
            self._warned = True
            log.warning(
                "a channel count lies below the latency table's profiled range (built for max_ratio %s); "
                "extrapolating linearly",
                self.table.search.get("max_ratio"),
            )
        return out

    def raw_kept(self, kept: Sequence[int]) -> float:
        """The uncorrected sum of per-layer table times for kept channel counts (in ``group_order``)."""
        return sum(self.sums(kept))

    def predict_kept(self, kept: Sequence[int]) -> float:
        """Predicted latency (ms) for kept channel counts (in ``group_order``), cached."""
        key = tuple(int(k) for k in kept)
        hit = self._cache.get(key)
        if hit is None:
            aligned, other = self.sums(key)
            removed = sum(1 for i in self._inner_index if key[i] == 0)
            line = self.intercept + self.slope_aligned * aligned + self.slope_other * other
            hit = min(line + self.curve * (aligned + other) ** 2 + self.block_ms * removed, self.cap_ms)
            if len(self._cache) > _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def kept(self, ratios: Mapping[str, float]) -> tuple[int, ...]:
        """Kept channel counts (in ``group_order``) of ``ratios`` at the table's round_to."""
        return table_kept(self.table, ratios, group_order=self.group_order)

    @property
    def blocks(self) -> dict[str, str]:
        """Removable block → inner group, for the blocks this table covers (empty: built without depth)."""
        return dict(self.table.search.get("blocks") or {})

    def predict(self, ratios: Mapping[str, float], *, removed: Sequence[str] = ()) -> float:
        """Predicted latency (ms) of the model pruned with ``ratios`` (group → ratio) and without the ``removed``
        blocks, at the table's round_to. A block's inner group at ratio 1 also means the block is removed.

        Raises:
            UserError: a removed block the table does not cover.
        """
        if removed:
            missing = [b for b in removed if b not in self.blocks]
            if missing:
                raise UserError(f"the latency table does not cover removed block '{missing[0]}'; {REBUILD} --depth")
            ratios = {**ratios, **{self.blocks[b]: 1.0 for b in removed}}
        return self.predict_kept(self.kept(ratios))

    def latency_ms(
        self,
        *,
        model: nn.Module | None,
        ratios: Mapping[str, float],
        kept: tuple[int, ...],
        removed: Sequence[str] = (),
    ) -> float:
        """The :class:`~prunegym.env.latency.measured.LatencyModel` entry point; ``model`` is not used."""
        if removed or len(kept) != len(self.group_order):
            return self.predict(ratios, removed=removed)
        return self.predict_kept(kept)

    def layer_ms(self, ratios: Mapping[str, float]) -> dict[str, float]:
        """Uncorrected per-layer table times (ms) of a policy, for inspection."""
        counts = dict(zip(self.group_order, self.kept(ratios), strict=True))
        return {la.name: la.ms(counts)[0] for la in self._layers}
