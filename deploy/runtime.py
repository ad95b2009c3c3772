"""Run a deployed model with ONNX Runtime alone: classify images, evaluate, compare two models.

Needs only numpy, onnxruntime, Pillow and the standard library (torch is never imported, directly or via
another prunegym module), so a bundle runs on a machine where PyTorch is not installed. Sessions come from
:mod:`prunegym.core.onnxrt`, the torch-free runtime layer: ONNX Runtime (``runtime="ort"``) or, where it is
installed, OpenVINO (``runtime="openvino"``).

A bundle folder holds ``model.onnx`` (FP32), ``model.int8.onnx``, ``preprocessing.json`` and ``labels.txt``;
``preprocessing.json`` says how to turn an image into the model's input::

    {"format": "prunegym.preprocessing/1", "layout": "NCHW", "channels": 3, "input_size": [32, 32],
     "resize": "bilinear", "mean": [...], "std": [...]}     # pixel = (value / 255 - mean) / std
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from prunegym.core.errors import UserError
from prunegym.core.onnxrt import OpenVinoSession, SessionAny, open_model

__all__ = [
    "FP32_FILE",
    "INT8_FILE",
    "LABELS_FILE",
    "PREPROCESSING_FILE",
    "PREPROCESSING_FORMAT",
    "Agreement",
    "Classifier",
    "OnnxEvalResult",
    "Prediction",
    "Preprocessing",
    "agreement",
    "evaluate_onnx",
    "normalize",
    "predict_logits",
]

log = logging.getLogger(__name__)

PREPROCESSING_FORMAT = "prunegym.preprocessing/1"
PREPROCESSING_FILE = "preprocessing.json"
LABELS_FILE = "labels.txt"
_NOT_8_BIT = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "32-bit integer", "F": "floating-point"}

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
_RESIZE = ("bilinear", "bicubic", "nearest", "lanczos")

ImageLike = Any  # a path (str/Path), a PIL image, or a uint8 array (H×W, H×W×C, C×H×W, or a N×… batch)


# ----------------------------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input: resize to ``input_size`` (H, W), scale to [0,1], then (x-mean)/std."""

    channels: int
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "bilinear"
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise UserError(f"preprocessing channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise UserError(f"preprocessing input_size must be [height, width], got {list(self.input_size)}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise UserError(
                f"preprocessing mean/std need {self.channels} values each, got {len(self.mean)}/{len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise UserError(f"preprocessing std must be positive, got {list(self.std)}")
        if self.resize not in _RESIZE:
            raise UserError(f"unknown resize {self.resize!r}; use one of {', '.join(_RESIZE)}")
        if self.layout != "NCHW":
            raise UserError(f"layout {self.layout!r} is not supported; prunegym models take NCHW")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        fmt = data.get("format", PREPROCESSING_FORMAT)
        if fmt != PREPROCESSING_FORMAT:
            raise UserError(f"preprocessing format {fmt!r} is not {PREPROCESSING_FORMAT!r}; rewrite the bundle")
        missing = [k for k in ("channels", "input_size", "mean", "std") if k not in data]
        if missing:
            raise UserError(f"preprocessing lacks {', '.join(missing)}; rewrite the bundle with prunegym deploy")
        size = data["input_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        return cls(
            channels=int(data["channels"]),
            input_size=(int(size[0]), int(size[1])),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            resize=str(data.get("resize", "bilinear")),
            layout=str(data.get("layout", "NCHW")),
        )

    @classmethod
    def load(cls, path: Path | str) -> Preprocessing:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise UserError(f"{path} not found; a bundle needs {PREPROCESSING_FILE} beside the model") from exc
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); rewrite the bundle") from exc
        if not isinstance(data, dict):
            raise UserError(f"{path} must hold a JSON object; rewrite the bundle")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PREPROCESSING_FORMAT,
            "layout": self.layout,
            "channels": self.channels,
            "color": "RGB" if self.channels == 3 else "L",
            "input_size": list(self.input_size),
            "resize": self.resize,
            "scale": "1/255",
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def to_array(self, image: ImageLike) -> np.ndarray:
        """One image → a uint8 C×H×W array of this size and channel count."""
        from PIL import Image

        if isinstance(image, str | Path):
            try:
                with Image.open(image) as im:
                    return self._from_pil(im, name=str(image))
            except FileNotFoundError as exc:
                raise UserError(f"image not found: {image}; check the path") from exc
            except (OSError, Image.DecompressionBombError) as exc:
                raise UserError(f"cannot read image {image} ({exc}); pass a PNG/JPEG file") from exc
        if isinstance(image, Image.Image):
            return self._from_pil(image)
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            raise UserError(f"image arrays must be uint8 (0-255), got {arr.dtype}; pass raw pixels")
        chw = _to_chw(arr, self.channels)
        if chw.shape[0] == self.channels and chw.shape[1:] == self.input_size:
            return chw
        mode = "L" if chw.shape[0] == 1 else "RGB"
        return self._from_pil(Image.fromarray(chw[0] if mode == "L" else chw.transpose(1, 2, 0), mode=mode))

    def _from_pil(self, im: Any, *, name: str = "image") -> np.ndarray:
        from PIL import Image

        if im.mode in _NOT_8_BIT:
            raise UserError(
                f"{name} has {_NOT_8_BIT[im.mode]} pixels (mode {im.mode}), which the model's 0-255 inputs cannot "
                "hold faithfully; save it as an 8-bit PNG or JPEG first"
            )
        target = "RGB" if self.channels == 3 else "L"
        height, width = self.input_size
        notes = []
        if getattr(im, "n_frames", 1) > 1:
            notes.append(f"first of {im.n_frames} frames")
        if im.mode != target:
            what = {"RGBA": "alpha dropped", "LA": "alpha dropped", "P": "palette expanded", "CMYK": "CMYK to RGB"}
            notes.append(what.get(im.mode, f"{im.mode} to {target}"))
            if target == "L" and im.mode not in ("L", "LA", "1"):
                notes.append("colour to grey")
        if im.size != (width, height):
            notes.append(f"resized {im.size[0]}×{im.size[1]} → {width}×{height} ({self.resize})")
        if notes:
            log.info("%s: %s", name, ", ".join(notes))
        im = im.convert(target)
        if im.size != (width, height):
            im = im.resize((width, height), getattr(Image.Resampling, self.resize.upper()))
        arr = np.asarray(im, dtype=np.uint8)
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _to_chw(arr: np.ndarray, channels: int) -> np.ndarray:
    """H×W, H×W×C or C×H×W uint8 → C×H×W (channel-first wins when both readings fit)."""
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        if arr.shape[0] in (1, 3) and (arr.shape[0] == channels or arr.shape[2] not in (1, 3)):
            return arr
        if arr.shape[2] in (1, 3, 4):
            return arr[:, :, :3].transpose(2, 0, 1)
    raise UserError(f"cannot read an image array of shape {arr.shape}; pass H×W, H×W×C or C×H×W uint8")


def normalize(x_uint8: np.ndarray, *, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 N×C×H×W → float32 ``(x/255 - mean)/std``, the same arithmetic as training's data pipeline."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return (np.asarray(x_uint8).astype(np.float32) / np.float32(255.0) - m) / s


# ----------------------------------------------------------------------------------------------- batched inference


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _session(model: Path | str | SessionAny, *, threads: int, provider: str, runtime: str) -> SessionAny:
    """``model`` itself when it is an open session, else a new one on ``runtime``."""
    if isinstance(model, ort.InferenceSession | OpenVinoSession):
        return model
    return open_model(model, runtime=runtime, threads=threads, provider=provider)


def predict_logits(
    model: Path | str | SessionAny,
    x_uint8: np.ndarray,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    threads: int = 1,
    provider: str = "CPUExecutionProvider",
    runtime: str = "ort",
) -> np.ndarray:
    """N×classes float32 logits for uint8 N×C×H×W images (a fixed-batch model is fed whole, padded batches).

    Args:
        model: an ONNX file or an open session.
        x_uint8: the images.
        mean: per-channel mean of the normalization.
        std: per-channel std of the normalization.
        batch_size: images per run.
        threads: threads of a new session.
        provider: ONNX Runtime execution provider of a new session.
        runtime: "ort" or "openvino" (a new session's).
    """
    session = _session(model, threads=threads, provider=provider, runtime=runtime)
    x = np.asarray(x_uint8)
    if x.ndim != 4:
        raise UserError(f"images must be uint8 N×C×H×W, got shape {x.shape}")
    meta = session.get_inputs()[0]
    fixed = meta.shape[0] if isinstance(meta.shape[0], int) else None
    step = fixed or batch_size
    outputs = []
    for sl in _batches(len(x), step):
        batch = normalize(x[sl], mean=mean, std=std)
        count = len(batch)
        if fixed and count < fixed:
            batch = np.concatenate([batch, np.zeros((fixed - count, *batch.shape[1:]), dtype=np.float32)])
        logits = session.run(None, {meta.name: batch})[0]
        outputs.append(logits[:count])
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32, copy=False)


@dataclass(frozen=True)
class OnnxEvalResult:
    top1: float  # percent
    top5: float  # percent
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"top1": round(self.top1, 4), "top5": round(self.top5, 4), "n": self.n}


def _topk_hits(logits: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    k = min(5, logits.shape[1])
    topk = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    hits = topk == y[:, None]
    return int(hits[:, 0].sum()), int(hits.any(axis=1).sum())


def evaluate_onnx(
    model: Path | str | SessionAny,
    x_uint8: np.ndarray,
    y: np.ndarray,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    threads: int = 1,
    provider: str = "CPUExecutionProvider",
    runtime: str = "ort",
) -> OnnxEvalResult:
    """Top-1/top-5 accuracy (percent) of an ONNX model on uint8 N×C×H×W images and integer labels, on ``runtime``."""
    labels = np.asarray(y).astype(np.int64)
    if len(labels) != len(x_uint8) or len(labels) == 0:
        raise UserError(f"need as many labels as images (and at least one), got {len(labels)} and {len(x_uint8)}")
    logits = predict_logits(
        model, x_uint8, mean=mean, std=std, batch_size=batch_size, threads=threads, provider=provider, runtime=runtime
    )
    correct1, correct5 = _topk_hits(logits, labels)
    n = len(labels)
    return OnnxEvalResult(top1=100.0 * correct1 / n, top5=100.0 * correct5 / n, n=n)


@dataclass(frozen=True)
class Agreement:
    """How often two models pick the same top-1 class, and how far apart their logits are."""

    top1_agreement: float  # percent of images with the same top-1 class
    max_abs_diff: float
    mean_abs_diff: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "top1_agreement": round(self.top1_agreement, 4),
            "max_abs_diff": round(self.max_abs_diff, 6),
            "mean_abs_diff": round(self.mean_abs_diff, 6),
            "n": self.n,
        }


def agreement(
    model_a: Path | str | SessionAny,
    model_b: Path | str | SessionAny | np.ndarray,
    x_uint8: np.ndarray,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    threads: int = 1,
    provider: str = "CPUExecutionProvider",
    runtime: str = "ort",
) -> Agreement:
    """Compare ``model_a`` with ``model_b`` (another ONNX model, or reference logits such as PyTorch's), on ``runtime``."""
    kwargs: dict[str, Any] = {
        "mean": mean,
        "std": std,
        "batch_size": batch_size,
        "threads": threads,
        "runtime": runtime,
    }
    logits_a = predict_logits(model_a, x_uint8, provider=provider, **kwargs)
    if isinstance(model_b, np.ndarray):
        logits_b = model_b.astype(np.float32, copy=False)
    else:
        logits_b = predict_logits(model_b, x_uint8, provider=provider, **kwargs)
    if logits_a.shape != logits_b.shape:
        raise UserError(f"cannot compare logits of shapes {logits_a.shape} and {logits_b.shape}; use the same images")
    diff = np.abs(logits_a - logits_b)
    same = logits_a.argmax(axis=1) == logits_b.argmax(axis=1)
    n = len(logits_a)
    return Agreement(
        top1_agreement=100.0 * float(same.mean()) if n else 0.0,
        max_abs_diff=float(diff.max()) if n else 0.0,
        mean_abs_diff=float(diff.mean()) if n else 0.0,
        n=n,
    )


# ----------------------------------------------------------------------------------------------- classifier


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one image, most probable first."""

    labels: tuple[str, ...]
    indices: tuple[int, ...]
    probabilities: tuple[float, ...]

    @property
    def label(self) -> str:
        return self.labels[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "top": [
                {"label": lab, "index": i, "probability": round(p, 6)}
                for lab, i, p in zip(self.labels, self.indices, self.probabilities, strict=True)
            ],
        }


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _read_labels(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        raise UserError(f"{path} not found; a bundle needs {LABELS_FILE} (one class name per line)")
    labels = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not labels:
        raise UserError(f"{path} is empty; write one class name per line")
    return labels


class Classifier:
    """An image classifier from a bundle folder (or an ONNX file with ``preprocessing.json`` and ``labels.txt``
    beside it), run by ONNX Runtime or OpenVINO.

    Args:
        source: a bundle folder or an ``.onnx`` file.
        precision: "int8" (``model.int8.onnx``) or "fp32" (``model.onnx``); used only when ``source`` is a folder.
        threads: the runtime's threads.
        provider: ONNX Runtime execution provider, e.g. "CPUExecutionProvider".
        runtime: "ort" (ONNX Runtime) or "openvino".
    """

    def __init__(
        self,
        source: Path | str,
        *,
        precision: str = "int8",
        threads: int = 1,
        provider: str = "CPUExecutionProvider",
        runtime: str = "ort",
    ) -> None:
        source = Path(source)
        if source.is_dir():
            files = {"int8": INT8_FILE, "fp32": FP32_FILE}
            if precision not in files:
                raise UserError(f"unknown precision {precision!r}; use int8 or fp32")
            folder, model_path = source, source / files[precision]
        elif source.suffix == ".onnx":
            folder, model_path = source.parent, source
        else:
            raise UserError(f"{source} is neither a bundle folder nor an .onnx file; pass a bundle folder")
        if not model_path.is_file():
            raise UserError(f"model not found: {model_path}; write the bundle with prunegym deploy")
        self.model_path = model_path
        self.preprocessing = Preprocessing.load(folder / PREPROCESSING_FILE)
        self.labels = _read_labels(folder / LABELS_FILE)
        self.session = open_model(model_path, runtime=runtime, provider=provider, threads=threads)
        self.runtime = runtime
        log.debug("loaded %s with %d labels", model_path, len(self.labels))

    def _stack(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray:
        pre = self.preprocessing
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return np.stack([pre.to_array(img) for img in images])
        single = isinstance(images, str | Path | np.ndarray) or hasattr(images, "convert")
        items = [images] if single else list(images)
        if not items:
            raise UserError("no images to classify; pass at least one image")
        return np.stack([pre.to_array(img) for img in items])

    def logits(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray:
        pre = self.preprocessing
        return predict_logits(self.session, self._stack(images), mean=pre.mean, std=pre.std)

    def predict(self, images: ImageLike | Sequence[ImageLike], *, top_k: int = 5) -> list[Prediction]:
        """Top-``top_k`` labels and softmax probabilities for each image (paths, PIL images, uint8 arrays)."""
        if top_k < 1:
            raise UserError(f"top_k must be >= 1, got {top_k}")
        logits = self.logits(images)
        if logits.shape[1] != len(self.labels):
            raise UserError(
                f"the model predicts {logits.shape[1]} classes but labels.txt names {len(self.labels)}; fix labels.txt"
            )
        probs = _softmax(logits.astype(np.float64))
        k = min(top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [
            Prediction(
                labels=tuple(self.labels[i] for i in row),
                indices=tuple(int(i) for i in row),
                probabilities=tuple(float(p[i]) for i in row),
            )
            for row, p in zip(order, probs, strict=True)
        ]
