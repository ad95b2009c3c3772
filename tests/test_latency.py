"""Tests for prunegym.core.onnxrt and prunegym.env.latency: measured latency with a fixed-thread ORT session."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from prunegym.core.errors import UserError
from prunegym.core.models import build_model
from prunegym.core.onnx_export import export_onnx, export_onnx_bytes
from prunegym.core.onnxrt import LatencyConfig, LatencyResult, make_session, measure_latency, resolve_provider
from prunegym.env.latency import measure_model_latency

FAST = LatencyConfig(warmup=2, repeats=7)


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = build_model("smallcnn", num_classes=10, in_channels=1)
    return export_onnx(model, tmp_path_factory.mktemp("lat") / "small.onnx", input_shape=(1, 8, 8))


def _sane(result: LatencyResult, *, repeats: int) -> None:
    assert result.repeats == repeats
    assert all(math.isfinite(v) for v in (result.median_ms, result.p90_ms, result.mean_ms, result.std_ms))
    assert 0 < result.min_ms <= result.median_ms <= result.p90_ms
    assert result.median_ms < 1000  # a 4-conv 8×8 model: far under a second, even on a loaded machine
    assert result.iqr_ms >= 0 and result.std_ms >= 0


def test_measure_latency_honours_repeats_batch_and_threads(small_onnx: Path) -> None:
    result = measure_latency(small_onnx, input_shape=(1, 8, 8), config=FAST)
    _sane(result, repeats=7)
    assert (result.batch_size, result.threads, result.provider) == (1, 1, "CPUExecutionProvider")

    config = LatencyConfig(batch_size=4, intra_op_threads=2, warmup=0, repeats=3, graph_optimization="basic")
    result = measure_latency(small_onnx, config=config)  # input shape read from the model's static dims
    _sane(result, repeats=3)
    assert (result.batch_size, result.threads) == (4, 2)
    assert set(result.to_dict()) >= {"median_ms", "p90_ms", "mean_ms", "std_ms", "iqr_ms", "repeats"}


def test_measure_latency_accepts_bytes_and_measure_model_latency_exports() -> None:
    model = build_model("smallcnn", num_classes=10, in_channels=1)
    _sane(measure_latency(export_onnx_bytes(model, input_shape=(1, 8, 8)), config=FAST), repeats=7)
    _sane(measure_model_latency(model, input_shape=(1, 8, 8), config=FAST), repeats=7)


def test_bad_provider_is_a_user_error_listing_the_available_ones(small_onnx: Path) -> None:
    with pytest.raises(UserError, match="CPUExecutionProvider") as excinfo:
        measure_latency(small_onnx, config=LatencyConfig(provider="NoSuchExecutionProvider"))
    assert "NoSuchExecutionProvider" in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert resolve_provider("cpu") == "CPUExecutionProvider"


def test_bad_config_fixed_batch_and_missing_file_are_user_errors(small_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="repeats"):
        LatencyConfig(repeats=0)
    with pytest.raises(UserError, match="graph_optimization"):
        LatencyConfig(graph_optimization="max")
    fixed = export_onnx_bytes(
        build_model("smallcnn", num_classes=10, in_channels=1), input_shape=(1, 8, 8), dynamic_batch=False
    )
    with pytest.raises(UserError, match="fixed batch of 1"):
        measure_latency(fixed, config=LatencyConfig(batch_size=8, repeats=1))
    with pytest.raises(UserError, match="not found"):
        make_session(tmp_path / "missing.onnx")
    with pytest.raises(UserError, match="does not fit"):
        measure_latency(small_onnx, input_shape=(8, 8), config=FAST)
