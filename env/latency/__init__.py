"""prunegym.env.latency: the environment's latency models, measured and predicted, side by side.

- measured (:mod:`.measured`): export each candidate to ONNX and time it with ONNX Runtime or OpenVINO.
- remote (:mod:`.remote`): the same, on a device served by ``prunegym device serve`` through Redis.
- predicted: a NetAdapt-style per-layer lookup table profiled once on the target device: its format
  (:mod:`.table`), the channel-count grids (:mod:`.grids`), per-layer profiling (:mod:`.profiling`), the build
  (:mod:`.build`, :mod:`.calibration`), the predictor (:mod:`.predict`), and its check against measurement
  (:mod:`.check`, :mod:`.plot`).

Sessions and timing come from :mod:`prunegym.core.onnxrt`; :class:`LatencyConfig` and :class:`LatencyResult`
are re-exported here because this package's functions take and return them.
"""

from __future__ import annotations

from prunegym.core.lazy import lazy_attributes

# names load lazily, so that the CLI can read TableBuildConfig's options without importing PyTorch
_WHERE = {
    "LatencyConfig": "prunegym.core.onnxrt",
    "LatencyResult": "prunegym.core.onnxrt",
    "build_latency_table": "prunegym.env.latency.build",
    "partial_path": "prunegym.env.latency.build",
    "random_policies": "prunegym.env.latency.calibration",
    "LatencyCheck": "prunegym.env.latency.check",
    "check_latency_table": "prunegym.env.latency.check",
    "MODES": "prunegym.env.latency.config",
    "Progress": "prunegym.env.latency.config",
    "TableBuildConfig": "prunegym.env.latency.config",
    "group_counts": "prunegym.env.latency.grids",
    "LatencyModel": "prunegym.env.latency.measured",
    "MeasuredLatency": "prunegym.env.latency.measured",
    "measure_model_latency": "prunegym.env.latency.measured",
    "plot_check": "prunegym.env.latency.plot",
    "RemoteLatency": "prunegym.env.latency.remote",
    "device_round_to": "prunegym.env.latency.remote",
    "PredictedLatency": "prunegym.env.latency.predict",
    "nchwc_block": "prunegym.env.latency.predict",
    "FORMAT": "prunegym.env.latency.table",
    "VERSION": "prunegym.env.latency.table",
    "LatencyTable": "prunegym.env.latency.table",
    "LayerEntry": "prunegym.env.latency.table",
    "architecture_hash": "prunegym.env.latency.table",
    "device_info": "prunegym.env.latency.table",
}
__all__ = sorted(_WHERE)


__getattr__ = lazy_attributes(__name__, _WHERE)
