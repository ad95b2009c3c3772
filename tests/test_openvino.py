"""The same FP32 and QDQ INT8 ONNX files on ONNX Runtime and OpenVINO: matching top-1 and logits, timing on both
(skipped only where OpenVINO is not installed; the dev extra installs it, so CI runs it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")

from prunegym.core.checkpoint import load_model
from prunegym.core.errors import UserError
from prunegym.core.onnx_export import export_onnx
from prunegym.core.onnxrt import (
    LatencyConfig,
    OpenVinoSession,
    check_runtime,
    host_record,
    measure_interleaved,
    open_model,
    resolve_clock,
    runtime_info,
)
from prunegym.deploy.benchmark import benchmark_models
from prunegym.deploy.quantize import quantize_int8
from prunegym.deploy.runtime import agreement, evaluate_onnx, predict_logits


@pytest.fixture(scope="module")
def onnx_pair(digits_model: Path, digits, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ov")
    model = load_model(str(digits_model)).eval()
    fp32 = export_onnx(model, out / "model.onnx", input_shape=digits.input_shape)
    mean = np.asarray(digits.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(digits.std, dtype=np.float32).reshape(1, -1, 1, 1)
    calib = ((digits.train_x[:256].numpy().astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
    int8 = out / "model.int8.onnx"
    quantize_int8(fp32, int8, calibration=calib)
    return {"fp32": fp32, "int8": int8}


def test_fp32_and_int8_give_the_same_answers_on_both_runtimes(onnx_pair: dict[str, Path], digits) -> None:
    x, y = digits.test_x.numpy(), digits.test_y.numpy()
    kw = {"mean": digits.mean, "std": digits.std}
    results = {
        (p, rt): evaluate_onnx(path, x, y, runtime=rt, **kw)
        for p, path in onnx_pair.items()
        for rt in ("ort", "openvino")
    }
    assert results["fp32", "ort"].top1 > 80.0  # a trained model, not chance (10 %)
    # FP32: OpenVINO at f32 precision (not its bf16 default) agrees with ONNX Runtime to float rounding
    fp32 = agreement(onnx_pair["fp32"], onnx_pair["fp32"], x, runtime="ort", **kw)
    ov_logits = predict_logits(onnx_pair["fp32"], x, runtime="openvino", **kw)
    ort_logits = predict_logits(onnx_pair["fp32"], x, runtime="ort", **kw)
    assert fp32.max_abs_diff == 0.0
    assert np.max(np.abs(ov_logits - ort_logits)) < 1e-3
    assert results["fp32", "openvino"].top1 == pytest.approx(results["fp32", "ort"].top1, abs=0.2)
    # INT8 QDQ: each runtime's own integer kernels; the same decisions on nearly every image
    ov8 = predict_logits(onnx_pair["int8"], x, runtime="openvino", **kw)
    ort8 = predict_logits(onnx_pair["int8"], x, runtime="ort", **kw)
    assert np.mean(ov8.argmax(1) == ort8.argmax(1)) >= 0.97
    assert results["int8", "openvino"].top1 == pytest.approx(results["int8", "ort"].top1, abs=2.0)
    assert results["int8", "ort"].top1 == pytest.approx(results["fp32", "ort"].top1, abs=3.0)


def test_openvino_sessions_say_what_they_run(onnx_pair: dict[str, Path]) -> None:
    fp32 = open_model(onnx_pair["fp32"], runtime="openvino")
    int8 = open_model(onnx_pair["int8"], runtime="openvino")
    assert isinstance(fp32, OpenVinoSession)
    assert runtime_info(fp32)["precision"] == "f32" and fp32.inference_precision == "f32"  # not bf16
    assert runtime_info(int8)["precision"] == "int8"
    assert runtime_info(open_model(onnx_pair["int8"]), model=onnx_pair["int8"])["precision"] == "int8"
    rec = host_record(runtime="openvino")
    assert rec["runtime"] == "openvino" and rec["runtime_version"][:2] == "20" and rec["provider"] == "OpenVINO:CPU"
    with pytest.raises(UserError, match="unknown runtime 'tensorrt'; use one of ort, openvino"):
        check_runtime("tensorrt")


def test_both_runtimes_time_in_one_interleaved_run(onnx_pair: dict[str, Path]) -> None:
    config = LatencyConfig(runtime="openvino", repeats=20)
    assert resolve_clock("auto", config=config) == "cpu"  # OpenVINO at 1 thread infers on the calling thread
    times = measure_interleaved(list(onnx_pair.values()), input_shapes=[(1, 8, 8)] * 2, config=config, rounds=2)
    assert times.cpu_ms.shape == (2, 2, 10) and (times.cpu_ms > 0).all()
    report = benchmark_models(
        {"fp32@ort": onnx_pair["fp32"], "fp32@openvino": onnx_pair["fp32"], "int8@openvino": onnx_pair["int8"]},
        threads=(1,),
        repeats=10,
        rounds=2,
        throughput_repeats=2,
        batch_throughput=8,
        runtimes={"fp32@openvino": "openvino", "int8@openvino": "openvino"},
    )
    got = {e.model: (e.runtime, e.precision) for e in report.entries}
    assert got == {
        "fp32@ort": ("ort", "fp32"),
        "fp32@openvino": ("openvino", "f32"),
        "int8@openvino": ("openvino", "int8"),
    }
    assert set(report.runtimes) == {"ort", "openvino"} and "| openvino | int8 |" in report.to_markdown()
