"""Tests for prunegym.core.onnx_export: ORT matches PyTorch, dynamic batch, atomic output, op-naming errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from prunegym.core.errors import UserError
from prunegym.core.models import build_model
from prunegym.core.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, export_onnx_bytes, verify_onnx


def _session(path: Path | bytes) -> ort.InferenceSession:
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("name", "in_channels", "input_shape"),
    [("smallcnn", 1, (1, 8, 8)), ("resnet20", 3, (3, 32, 32))],
)
def test_export_matches_torch_at_batch_1_and_7(
    tmp_path: Path, name: str, in_channels: int, input_shape: tuple[int, int, int]
) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=in_channels)
    # non-trivial BatchNorm statistics, so a wrong BN folding would show
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.train()  # export must switch a copy to eval mode and leave this one alone
    path = export_onnx(model, tmp_path / f"{name}.onnx", input_shape=input_shape)
    assert model.training
    assert path == tmp_path / f"{name}.onnx" and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]

    session = _session(path)
    model.eval()
    for batch in (1, 7):
        x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(None, {INPUT_NAME: x.numpy()})
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_static_batch_export_fixes_the_batch_dimension() -> None:
    model = build_model("smallcnn", num_classes=10, in_channels=1)
    data = export_onnx_bytes(model, input_shape=(1, 8, 8), dynamic_batch=False)
    dims = onnx.load_from_string(data).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 1, 8, 8]
    dynamic = export_onnx_bytes(model, input_shape=(1, 8, 8), dynamic_batch=True)
    dims = onnx.load_from_string(dynamic).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 8, 8]


def test_verify_onnx_reports_a_tiny_difference() -> None:
    model = build_model("smallcnn", num_classes=10, in_channels=1)
    data = export_onnx_bytes(model, input_shape=(1, 8, 8))
    diff = verify_onnx(data, model, input_shape=(1, 8, 8))
    assert 0.0 <= diff < 1e-4
    other = build_model("smallcnn", num_classes=10, in_channels=1)  # different random weights
    assert verify_onnx(data, other, input_shape=(1, 8, 8)) > 1e-3


class _Bessel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.i0(x)


def test_unsupported_op_is_a_one_line_user_error_naming_it(tmp_path: Path) -> None:
    target = tmp_path / "bad.onnx"
    with pytest.raises(UserError, match=r"aten::i0") as excinfo:
        export_onnx(_Bessel(), target, input_shape=(3, 4, 4), exporter="torchscript")
    assert "\n" not in str(excinfo.value)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_bad_input_shape_and_exporter_are_user_errors(tmp_path: Path) -> None:
    model = build_model("smallcnn", num_classes=10, in_channels=1)
    with pytest.raises(UserError, match="C×H×W"):
        export_onnx(model, tmp_path / "m.onnx", input_shape=(8, 8))
    with pytest.raises(UserError, match="unknown ONNX exporter"):
        export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 8, 8), exporter="magic")
