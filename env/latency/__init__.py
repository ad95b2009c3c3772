"""prunegym.env.latency: the environment's latency models, measured and predicted, side by side.

- measured (:mod:`.measured`): export each candidate to ONNX and time it with ONNX Runtime.
- predicted: a NetAdapt-style per-layer lookup table profiled once on the target device: its format
  (:mod:`.table`), the channel-count grids (:mod:`.grids`), per-layer profiling (:mod:`.profiling`), the build
  (:mod:`.build`, :mod:`.calibration`), the predictor (:mod:`.predict`), and its check against measurement
  (:mod:`.check`, :mod:`.plot`).

Sessions and timing come from :mod:`prunegym.core.onnxrt`; :class:`LatencyConfig` and :class:`LatencyResult`
are re-exported here because this package's functions take and return them.
"""

from __future__ import annotations

from prunegym.core.onnxrt import LatencyConfig, LatencyResult
from prunegym.env.latency.build import build_latency_table, partial_path
from prunegym.env.latency.calibration import random_policies
from prunegym.env.latency.check import LatencyCheck, check_latency_table
from prunegym.env.latency.config import MODES, Progress, TableBuildConfig
from prunegym.env.latency.grids import group_counts
from prunegym.env.latency.measured import LatencyModel, MeasuredLatency, measure_model_latency
from prunegym.env.latency.plot import plot_check
from prunegym.env.latency.predict import PredictedLatency, nchwc_block
from prunegym.env.latency.table import (
    FORMAT,
    VERSION,
    LatencyTable,
    LayerEntry,
    architecture_hash,
    device_info,
)

__all__ = [
    "FORMAT",
    "MODES",
    "VERSION",
    "LatencyCheck",
    "LatencyConfig",
    "LatencyModel",
    "LatencyResult",
    "LatencyTable",
    "LayerEntry",
    "MeasuredLatency",
    "PredictedLatency",
    "Progress",
    "TableBuildConfig",
    "architecture_hash",
    "build_latency_table",
    "check_latency_table",
    "device_info",
    "group_counts",
    "measure_model_latency",
    "nchwc_block",
    "partial_path",
    "plot_check",
    "random_policies",
]
