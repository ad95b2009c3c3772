"""Tests for the deploy side of ONNX Runtime: INT8 quantization, evaluation, the bundle, the torch-free runtime
and the interleaved benchmark. A small CNN is trained on the embedded digits for a few seconds first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from prunegym.core.data import DataSplits, iterate_batches, load_data
from prunegym.core.errors import UserError
from prunegym.core.models import build_model
from prunegym.core.onnx_export import export_onnx
from prunegym.deploy.benchmark import benchmark_models
from prunegym.deploy.bundle import render_report, write_bundle
from prunegym.deploy.quantize import QuantizeResult, quantize_int8, u8s8_saturates
from prunegym.deploy.runtime import Classifier, Preprocessing, agreement, evaluate_onnx, normalize

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Trained:
    data: DataSplits
    fp32: Path
    int8: Path
    quant: QuantizeResult
    logits: np.ndarray  # PyTorch logits on the test split


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """smallcnn trained 5 epochs on digits with plain SGD, exported and quantized (minmax, per channel)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared machine: one thread is 3× faster than two
    try:
        return _train_and_quantize(tmp_path_factory.mktemp("deploy"))
    finally:
        torch.set_num_threads(threads)


def _train_and_quantize(folder: Path) -> Trained:
    torch.manual_seed(0)
    data = load_data("digits")
    model = build_model("smallcnn", num_classes=data.num_classes, in_channels=data.in_channels)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(5):
        for xb, yb in iterate_batches(
            data.train_x, data.train_y, batch_size=32, mean=data.mean, std=data.std, shuffle=True, generator=gen
        ):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    model.eval()
    fp32 = export_onnx(model, folder / "model.onnx", input_shape=data.input_shape)
    calibration = normalize(data.train_x.numpy()[:256], mean=data.mean, std=data.std)
    quant = quantize_int8(fp32, folder / "model.int8.onnx", calibration=calibration, method="minmax")
    with torch.no_grad():
        x = torch.from_numpy(normalize(data.test_x.numpy(), mean=data.mean, std=data.std))
        logits = model(x).numpy()
    return Trained(data=data, fp32=fp32, int8=folder / "model.int8.onnx", quant=quant, logits=logits)


# ----------------------------------------------------------------------------------------------- quantize + evaluate


def test_int8_keeps_accuracy_within_one_point_and_is_smaller(trained: Trained) -> None:
    d = trained.data
    x, y = d.test_x.numpy(), d.test_y.numpy()
    fp32 = evaluate_onnx(trained.fp32, x, y, mean=d.mean, std=d.std, batch_size=100)
    int8 = evaluate_onnx(trained.int8, x, y, mean=d.mean, std=d.std, batch_size=64)
    assert fp32.n == int8.n == len(y) > 300
    assert fp32.top1 > 85.0  # a trained model, so the comparison means something
    assert abs(int8.top1 - fp32.top1) <= 1.0
    assert int8.top5 >= fp32.top5 - 1.0
    q = trained.quant
    assert q.int8_mb < q.fp32_mb and q.int8_mb == pytest.approx(trained.int8.stat().st_size / 1e6)
    assert (q.method, q.per_channel, q.quant_format, q.calibration_images) == ("minmax", True, "qdq", 256)
    assert q.reduce_range == u8s8_saturates()  # 7-bit weights where U8S8 kernels would saturate
    assert [p.name for p in trained.int8.parent.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_evaluate_onnx_matches_pytorch_top1(trained: Trained) -> None:
    d = trained.data
    x, y = d.test_x.numpy(), d.test_y.numpy()
    torch_top1 = 100.0 * float((trained.logits.argmax(1) == y).mean())
    assert evaluate_onnx(trained.fp32, x, y, mean=d.mean, std=d.std).top1 == pytest.approx(torch_top1)
    same = agreement(trained.fp32, trained.logits, x, mean=d.mean, std=d.std)
    assert same.top1_agreement == 100.0 and same.max_abs_diff < 1e-3 and same.n == len(y)
    vs_int8 = agreement(trained.fp32, trained.int8, x, mean=d.mean, std=d.std)
    assert 95.0 <= vs_int8.top1_agreement <= 100.0 and vs_int8.max_abs_diff > 0.0


def test_quantize_rejects_bad_method_and_calibration(trained: Trained, tmp_path: Path) -> None:
    calibration = np.zeros((4, 1, 8, 8), dtype=np.float32)
    with pytest.raises(UserError, match="minmax, entropy, percentile"):
        quantize_int8(trained.fp32, tmp_path / "q.onnx", calibration=calibration, method="kl")
    with pytest.raises(UserError, match="N×C×H×W"):
        quantize_int8(trained.fp32, tmp_path / "q.onnx", calibration=np.zeros((4, 8, 8), dtype=np.float32))
    with pytest.raises(UserError, match="not found"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "q.onnx", calibration=calibration)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------- bundle + runtime


def _report() -> dict[str, object]:
    return {
        "model": "smallcnn",
        "dataset": "digits",
        "variants": {
            "baseline": {"top1": 95.0, "params": 28000, "macs": 1_000_000, "size_mb": 0.12, "latency_ms": 0.10},
            "pruned": {"top1": 94.5, "params": 14000, "macs": 500_000, "size_mb": 0.06, "latency_ms": 0.05},
            "int8": {"top1": 94.4, "params": 14000, "macs": 500_000, "size_mb": 0.02, "latency_ms": 0.04},
        },
        "latency": {"provider": "CPUExecutionProvider", "threads": 1, "batch": 1},
        "notes": ["measured on a shared machine"],
    }


@pytest.fixture(scope="module")
def bundle(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = trained.data
    pre = Preprocessing(channels=1, input_size=(8, 8), mean=d.mean, std=d.std).to_dict()
    out = tmp_path_factory.mktemp("bundles") / "digits-bundle"
    return write_bundle(
        out,
        fp32_onnx=trained.fp32,
        int8_onnx=trained.int8,
        preprocessing=pre,
        labels=d.class_names,
        report=_report(),
    )


def test_bundle_layout_and_report(bundle: Path, tmp_path: Path) -> None:
    names = sorted(p.name for p in bundle.iterdir())
    assert names == ["labels.txt", "model.int8.onnx", "model.onnx", "preprocessing.json", "report.json", "report.md"]
    assert [p.name for p in bundle.parent.iterdir()] == [bundle.name]  # temp folder renamed away
    assert bundle.joinpath("labels.txt").read_text().split() == [str(i) for i in range(10)]
    assert json.loads(bundle.joinpath("report.json").read_text()) == _report()
    pre = json.loads(bundle.joinpath("preprocessing.json").read_text())
    assert (pre["layout"], pre["channels"], pre["input_size"]) == ("NCHW", 1, [8, 8])
    md = bundle.joinpath("report.md").read_text()
    assert "| metric | baseline | pruned | int8 |" in md
    assert "| Accuracy top-1 (%) | 95.00 | 94.50 (-0.50 pt) | 94.40 (-0.60 pt) |" in md
    assert "| Weights (params) | 28.00K | 14.00K (-50.0%) | 14.00K (-50.0%) |" in md
    assert "| Latency (ms) | 0.100 | 0.050 (2.00× faster) | 0.040 (2.50× faster) |" in md
    assert "Throughput" not in md  # no variant has fps
    assert md == render_report(_report())
    with pytest.raises(UserError, match="already exists"):
        write_bundle(
            bundle,
            fp32_onnx=bundle / "model.onnx",
            int8_onnx=bundle / "model.int8.onnx",
            preprocessing=pre,
            labels=["a"],
            report={},
        )
    with pytest.raises(UserError, match="mean/std"):
        write_bundle(
            tmp_path / "b",
            fp32_onnx=bundle / "model.onnx",
            int8_onnx=bundle / "model.int8.onnx",
            preprocessing={**pre, "mean": [0.1, 0.2]},
            labels=["a"],
            report={},
        )
    assert not (tmp_path / "b").exists()


def test_overwrite_replaces_a_bundle_completely(bundle: Path, tmp_path: Path) -> None:
    pre = json.loads(bundle.joinpath("preprocessing.json").read_text())
    kwargs = {"fp32_onnx": bundle / "model.onnx", "int8_onnx": bundle / "model.int8.onnx", "preprocessing": pre}
    out = write_bundle(tmp_path / "b", labels=list("abcdefghij"), report={"v": 1}, **kwargs)
    write_bundle(out, labels=list("0123456789"), report={"v": 2}, overwrite=True, **kwargs)
    assert json.loads((out / "report.json").read_text()) == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_classifier_in_process(bundle: Path, trained: Trained, tmp_path: Path) -> None:
    d = trained.data
    x = d.test_x.numpy()
    clf = Classifier(bundle, precision="fp32")
    preds = clf.predict(x[:20], top_k=3)  # a uint8 N×C×H×W batch
    expected = trained.logits[:20].argmax(1)
    assert [p.indices[0] for p in preds] == expected.tolist()
    assert all(p.label == d.class_names[p.indices[0]] and len(p.labels) == 3 for p in preds)
    assert all(p.probabilities[0] >= p.probabilities[1] >= p.probabilities[2] > 0 for p in preds)
    # the same image as H×W, H×W×1, a PIL image and a file path gives the same answer
    png = tmp_path / "digit.png"
    Image.fromarray(x[0, 0], mode="L").save(png)
    reference = clf.predict(x[0])[0]  # C×H×W
    assert reference.indices[:3] == preds[0].indices
    for image in (x[0, 0], x[0].transpose(1, 2, 0), Image.open(png), png, str(png)):
        assert clf.predict(image)[0] == reference
    assert [p.indices for p in clf.predict([png, x[1]])] == [reference.indices, clf.predict(x[1])[0].indices]
    # a bigger RGB image is converted to grayscale and resized to 8×8
    Image.fromarray(np.repeat(np.kron(x[0, 0], np.ones((4, 4), np.uint8))[..., None], 3, axis=2)).save(png)
    assert clf.predict(png)[0].label in d.class_names
    with pytest.raises(UserError, match="not found"):
        clf.predict(tmp_path / "nope.png")
    with pytest.raises(UserError, match="neither a bundle folder"):
        Classifier(tmp_path / "x.txt")
    assert Classifier(bundle).model_path.name == "model.int8.onnx"


def test_runtime_classifies_a_png_without_torch(bundle: Path, trained: Trained, tmp_path: Path) -> None:
    d = trained.data
    x, y = d.test_x.numpy(), d.test_y.numpy()
    index = int(np.flatnonzero(trained.logits.argmax(1) == y)[0])  # an image the model gets right
    png = tmp_path / "digit.png"
    Image.fromarray(x[index, 0], mode="L").save(png)
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch import was not blocked")
        from prunegym.deploy.runtime import Classifier
        pred = Classifier({str(bundle)!r}, threads=1).predict({str(png)!r}, top_k=3)[0]
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m] is not None)
        print(json.dumps({{"prediction": pred.to_dict(), "torch_modules": loaded}}))
        """
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch_modules"] == []
    pred = result["prediction"]
    assert pred["label"] == d.class_names[int(y[index])]
    top = pred["top"]
    assert top[0]["label"] == pred["label"] and len(top) == 3
    assert all(t["label"] == d.class_names[t["index"]] for t in top)
    probs = [t["probability"] for t in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6


# ----------------------------------------------------------------------------------------------- benchmark


def test_benchmark_models_interleaved(trained: Trained) -> None:
    report = benchmark_models(
        {"fp32": trained.fp32, "int8": trained.int8},
        threads=(1, 2),
        batch_throughput=16,
        warmup=2,
        repeats=90,  # a tiny model: a few dozen runs per round before a per-round median means anything
        throughput_repeats=3,
        rounds=3,
    )
    assert [(e.model, e.threads) for e in report.entries] == [("fp32", 1), ("int8", 1), ("fp32", 2), ("int8", 2)]
    for e in report.entries:
        assert e.throughput_fps > 0 and 0 < e.latency_median_ms <= e.latency_p90_ms
        assert (e.batch_latency, e.batch_throughput, e.latency_samples) == (1, 16, 90)
        assert e.speedup > 0 and e.fps_ratio > 0
    assert report.get("fp32", 1).speedup == 1.0 and report.get("fp32", 2).fps_ratio == 1.0
    int8 = report.get("int8", 1)  # thread CPU time: 2 threads on the wall clock swing with any neighbour
    pooled = report.get("fp32", 1).latency_median_ms / int8.latency_median_ms
    assert int8.speedup == pytest.approx(pooled, rel=0.25)  # the median of per-round ratios, near the pooled ratio
    assert int8.speedup_cv >= 0.0 and report.get("fp32", 1).speedup_cv == 0.0
    assert [e.clock for e in report.entries] == ["cpu", "cpu", "wall", "wall"]  # thread CPU time at 1 thread
    assert report.baseline == "fp32" and report.rounds == 3
    assert "| int8 | 2 | wall |" in report.to_markdown() and "CPUs" in report.to_markdown()
    assert json.loads(json.dumps(report.to_dict()))["entries"][0]["model"] == "fp32"
    with pytest.raises(UserError, match="no models"):
        benchmark_models({})


def test_entropy_calibration_is_not_minmax_in_disguise(trained: Trained, tmp_path: Path) -> None:
    d = trained.data
    calibration = normalize(d.train_x.numpy()[:128], mean=d.mean, std=d.std)
    minmax = quantize_int8(trained.fp32, tmp_path / "minmax.onnx", calibration=calibration, method="minmax")
    entropy = quantize_int8(trained.fp32, tmp_path / "entropy.onnx", calibration=calibration, method="entropy")
    assert Path(minmax.int8_path).read_bytes() != Path(entropy.int8_path).read_bytes()
    x, y = d.test_x.numpy(), d.test_y.numpy()
    fp32 = evaluate_onnx(trained.fp32, x, y, mean=d.mean, std=d.std)
    assert evaluate_onnx(entropy.int8_path, x, y, mean=d.mean, std=d.std).top1 >= fp32.top1 - 3.0


def test_u8s8_saturation_check_reads_the_cpu_flags() -> None:
    import platform

    if platform.machine().lower() not in {"x86_64", "amd64"}:
        assert not u8s8_saturates("flags : fpu avx2")  # only x86's VPMADDUBSW path saturates
        return
    assert u8s8_saturates("flags\t\t: fpu sse4_2 avx avx2 fma")  # AVX2 without VNNI
    assert not u8s8_saturates("flags\t\t: fpu avx2 avx512f avx512_vnni")
    assert not u8s8_saturates("flags\t\t: fpu avx2 avx_vnni")
