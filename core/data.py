"""Datasets as uint8 tensors: parse a data spec, load train/val/test splits, iterate normalized batches.

A data spec is ``kind[:path][?k=v&k2=v2]``:

- ``cifar10:DIR`` / ``cifar100:DIR[?labels=coarse]`` — the "python version" pickles (read with a restricted
  unpickler that builds nothing but dicts, lists, bytes, str, int and numpy uint8 arrays);
- ``mnist:DIR`` / ``fashion-mnist:DIR`` — idx files, raw or ``.gz``;
- ``folder:DIR[?size=32]`` — one sub-folder of images per class (optionally under ``train/`` and ``test/``);
- ``digits`` — scikit-learn's bundled 8×8 digits.

The validation split is always carved from the training set with a seeded permutation, so search rewards never
see the official test split; ``test_x``/``test_y`` are for final reports only.
"""

from __future__ import annotations

import gzip
import importlib
import logging
import math
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from prunegym.core.errors import DataError

__all__ = [
    "AUGMENTS",
    "KNOWN_KINDS",
    "DataSplits",
    "default_val_size",
    "iterate_batches",
    "load_data",
    "num_batches",
    "parse_data_spec",
]

log = logging.getLogger(__name__)

KNOWN_KINDS = ("cifar10", "cifar100", "mnist", "fashion-mnist", "folder", "digits")
AUGMENTS = ("none", "crop", "crop+flip")

_OPTIONS = {"cifar100": {"labels"}, "folder": {"size"}}
_EXAMPLES = {
    "cifar10": "cifar10:../shared/data/cifar-10-batches-py",
    "cifar100": "cifar100:data/cifar-100-python",
    "mnist": "mnist:data/mnist",
    "fashion-mnist": "fashion-mnist:data/fashion-mnist",
    "folder": "folder:data/my-images?size=32",
    "digits": "digits",
}
_TEST_FRACTION = 0.2
_TEST_SEED = 0  # the carved test split (digits, folder) never depends on the val seed
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
_FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True, eq=False)
class DataSplits:
    """A dataset as uint8 N×C×H×W images and int64 labels, split into train / val (from train) / test."""

    spec: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    def __repr__(self) -> str:
        c, h, w = self.input_shape
        return (
            f"DataSplits({self.spec!r}, {c}×{h}×{w}, {self.num_classes} classes, train={len(self.train_y)}, "
            f"val={len(self.val_y)}, test={len(self.test_y)}, augment={self.augment!r})"
        )


@dataclass(frozen=True)
class _Raw:
    """What a loader returns: the full training set (val not yet carved) and the test set."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: tuple[str, ...]
    augment: str
    source: str


# ----------------------------------------------------------------------------------------------- specs


def parse_data_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """Split ``kind[:path][?k=v&k2=v2]`` into (kind, path or None, options). The kind is lower-cased."""
    head, _, query = spec.strip().partition("?")
    kind, sep, path = head.partition(":")
    kind = kind.strip().lower().replace("_", "-")
    if not kind:
        raise DataError(f"empty data spec {spec!r}; use kind[:path][?k=v], e.g. {_EXAMPLES['cifar10']}")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise DataError(f"bad option {item!r} in data spec {spec!r}; write options as ?key=value&key2=value2")
        options[key.strip().lower()] = value.strip()
    return kind, (path.strip() or None) if sep else None, options


def default_val_size(n_train: int) -> int:
    """The validation split carved from ``n_train`` training images when none is given: min(5000, n/5)."""
    return min(5000, n_train // 5)


def load_data(spec: str, *, val_size: int | None = None, seed: int = 0) -> DataSplits:
    """Load the dataset named by ``spec``; carve ``val_size`` images (default: :func:`default_val_size`)
    from the training set with a permutation seeded by ``seed``."""
    kind, path, options = parse_data_spec(spec)
    if kind not in KNOWN_KINDS:
        raise DataError(f"unknown data kind {kind!r} in {spec!r}; known kinds: {', '.join(KNOWN_KINDS)}")
    unknown = set(options) - _OPTIONS.get(kind, set())
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS.get(kind, set()))) or "none"
        raise DataError(f"{kind}: unknown option(s) {', '.join(sorted(unknown))}; allowed options: {allowed}")
    if kind == "digits":
        if path is not None:
            raise DataError(f"digits takes no path (got {path!r}); write just 'digits'")
        raw = _load_digits()
    else:
        if path is None:
            raise DataError(f"{kind}: no path in {spec!r}; write {kind}:DIR, e.g. {_EXAMPLES[kind]}")
        root = Path(path).expanduser()
        if not root.is_dir():
            raise DataError(f"{kind}: no such folder {root}; pass an existing folder, e.g. {_EXAMPLES[kind]}")
        if kind == "cifar10":
            raw = _load_cifar10(root)
        elif kind == "cifar100":
            raw = _load_cifar100(root, labels=options.get("labels", "fine"))
        elif kind in ("mnist", "fashion-mnist"):
            raw = _load_mnist(root, kind=kind)
        else:
            raw = _load_folder(root, size=_parse_size(options.get("size")))
    return _split(spec, raw, val_size=val_size, seed=seed)


def _split(spec: str, raw: _Raw, *, val_size: int | None, seed: int) -> DataSplits:
    n = len(raw.train_y)
    if val_size is None:
        val_size = default_val_size(n)
    if not 0 <= val_size < n:
        raise DataError(f"val_size={val_size} does not fit the {n} training images of {spec!r}; use 0 to {n - 1}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size].sort().values.numpy(), perm[val_size:].sort().values.numpy()

    def take(t: torch.Tensor, idx: np.ndarray) -> torch.Tensor:  # numpy fancy indexing: ~10x torch's on uint8
        return torch.from_numpy(np.take(t.numpy(), idx, axis=0))

    train_x, train_y = take(raw.train_x, train_idx), take(raw.train_y, train_idx)
    mean, std = _channel_stats(train_x)
    splits = DataSplits(
        spec=spec,
        train_x=train_x,
        train_y=train_y,
        val_x=take(raw.train_x, val_idx),
        val_y=take(raw.train_y, val_idx),
        test_x=raw.test_x,
        test_y=raw.test_y,
        num_classes=len(raw.class_names),
        class_names=raw.class_names,
        mean=mean,
        std=std,
        augment=raw.augment,
    )
    log.info("loaded %s from %s: %r", spec, raw.source, splits)
    return splits


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 images in [0,1] units, via 256-bin histograms."""
    values = np.arange(256, dtype=np.float64) / 255.0
    arr = x.numpy()
    means, stds = [], []
    for c in range(arr.shape[1]):
        hist = np.bincount(arr[:, c].ravel(), minlength=256).astype(np.float64)
        total = max(hist.sum(), 1.0)
        mean = float((hist * values).sum() / total)
        var = float((hist * values**2).sum() / total) - mean**2
        means.append(mean)
        stds.append(math.sqrt(max(var, 0.0)) or 1.0)  # a constant channel normalizes by 1, not by 0
    return tuple(means), tuple(stds)


def _carve(y: np.ndarray, *, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified seeded split of indices into (keep, take); a class with ≥2 items gives ≥1 and keeps ≥1."""
    rng = np.random.default_rng(seed)
    keep, take = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        k = round(fraction * len(idx))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        take.append(idx[:k])
        keep.append(idx[k:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(take))


# ----------------------------------------------------------------------------------------------- CIFAR


def _numpy_global(module: str, name: str) -> Any:
    """numpy moved ``core`` to ``_core`` in 2.0; resolve either spelling on whichever numpy is installed."""
    candidates = ("numpy._core.multiarray", "numpy.core.multiarray") if module != "numpy" else ("numpy",)
    for candidate in candidates:
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise DataError(f"cannot resolve {module}.{name} with numpy {np.__version__}; reinstall numpy")


class _CifarUnpickler(pickle.Unpickler):
    """Builds only what CIFAR pickles contain: dicts, lists, bytes, str, int and numpy arrays."""

    _BUILTINS = frozenset({"bytes", "bytearray", "dict", "list", "tuple", "set", "frozenset", "int", "float", "str"})
    _NUMPY = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def __init__(self, file: Any, *, source: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in self._BUILTINS:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        if (module, name) in self._NUMPY:
            return _numpy_global(module, name)
        raise DataError(
            f"refusing to unpickle {module}.{name} from {self._source}: not a CIFAR file; "
            "pass a folder of genuine CIFAR python-version files"
        )


def _unpickle(path: Path) -> dict[bytes, Any]:
    try:
        with path.open("rb") as f:
            obj = _CifarUnpickler(f, source=path).load()
    except DataError:
        raise
    except (
        OSError,
        EOFError,
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
    ) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read {path} as a CIFAR pickle ({detail}); re-extract the dataset archive") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a CIFAR dict; re-extract the dataset archive")
    return obj


def _field(d: dict[bytes, Any], key: bytes, path: Path) -> Any:
    if key not in d:
        raise DataError(f"{path} has no {key.decode()!r} entry; it is not a CIFAR file, re-extract the archive")
    return d[key]


def _cifar_images(d: dict[bytes, Any], label_key: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    data, labels = _field(d, b"data", path), np.asarray(_field(d, label_key, path))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' is not a uint8 N×3072 array; re-extract the dataset archive")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {len(labels)} labels for {len(data)} images; re-extract the dataset archive")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _names(d: dict[bytes, Any], key: bytes, path: Path) -> tuple[str, ...]:
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in _field(d, key, path))


def _find_dir(root: Path, marker: str, subdir: str, kind: str) -> Path:
    for candidate in (root, root / subdir):
        if (candidate / marker).is_file():
            return candidate
    raise DataError(
        f"{kind}: no {marker!r} in {root}; pass the folder that holds {subdir} files, e.g. {_EXAMPLES[kind]}"
    )


def _stack(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(x), torch.from_numpy(y)


def _check_labels(y: torch.Tensor, num_classes: int, source: Path) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"{source}: labels outside 0..{num_classes - 1} (found {int(y.min())}..{int(y.max())}); "
            "the files do not belong together, re-extract the dataset archive"
        )


def _load_cifar10(root: Path) -> _Raw:
    base = _find_dir(root, "data_batch_1", "cifar-10-batches-py", "cifar10")
    files = [base / f"data_batch_{i}" for i in range(1, 6)] + [base / "test_batch", base / "batches.meta"]
    for f in files:
        if not f.is_file():
            raise DataError(f"cifar10: {f} is missing; pass a complete cifar-10-batches-py folder")
    train_x, train_y = _stack([_cifar_images(_unpickle(f), b"labels", f) for f in files[:5]])
    test_x, test_y = _stack([_cifar_images(_unpickle(files[5]), b"labels", files[5])])
    names = _names(_unpickle(files[6]), b"label_names", files[6])
    for y, f in ((train_y, base), (test_y, files[5])):
        _check_labels(y, len(names), f)
    return _Raw(train_x, train_y, test_x, test_y, names, "crop+flip", str(base))


def _load_cifar100(root: Path, *, labels: str) -> _Raw:
    if labels not in ("fine", "coarse"):
        raise DataError(f"cifar100: labels={labels!r} is not valid; use ?labels=fine or ?labels=coarse")
    base = _find_dir(root, "train", "cifar-100-python", "cifar100")
    files = [base / "train", base / "test", base / "meta"]
    for f in files:
        if not f.is_file():
            raise DataError(f"cifar100: {f} is missing; pass a complete cifar-100-python folder")
    key = f"{labels}_labels".encode()
    train_x, train_y = _stack([_cifar_images(_unpickle(files[0]), key, files[0])])
    test_x, test_y = _stack([_cifar_images(_unpickle(files[1]), key, files[1])])
    names = _names(_unpickle(files[2]), f"{labels}_label_names".encode(), files[2])
    for y, f in ((train_y, files[0]), (test_y, files[1])):
        _check_labels(y, len(names), f)
    return _Raw(train_x, train_y, test_x, test_y, names, "crop+flip", str(base))


# ----------------------------------------------------------------------------------------------- MNIST


def _read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """Parse an idx file (ubyte only): 2 zero bytes, type 0x08, ndim, ndim big-endian int32 dims, data."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path} ({exc}); re-download or re-extract the file") from exc
    header = 4 + 4 * ndim
    if len(raw) < header or raw[0:2] != b"\0\0" or raw[3] != ndim:
        raise DataError(f"{path} is not an idx file with {ndim} dimension(s); pass the MNIST-format idx files")
    if raw[2] != 0x08:
        raise DataError(f"{path}: idx data type 0x{raw[2]:02x} is not supported; only unsigned bytes (0x08)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise DataError(
            f"{path} has {len(raw)} bytes but its header {dims} needs {expected}; the file is truncated or "
            "corrupt, re-download it"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_idx(root: Path, stem: str, kind: str) -> Path:
    dotted = stem.replace("-idx", ".idx")  # some mirrors spell it train-images.idx3-ubyte
    folders = [root, root / "raw", root / "MNIST" / "raw", root / "FashionMNIST" / "raw"]
    for folder in folders:
        for name in (stem, f"{stem}.gz", dotted, f"{dotted}.gz"):
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"{kind}: no {stem}[.gz] in {root}; pass the folder holding the idx files, e.g. {_EXAMPLES[kind]}")


def _load_mnist(root: Path, *, kind: str) -> _Raw:
    def pair(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        images_path = _find_idx(root, f"{prefix}-images-idx3-ubyte", kind)
        labels_path = _find_idx(root, f"{prefix}-labels-idx1-ubyte", kind)
        images, labels = _read_idx(images_path, ndim=3), _read_idx(labels_path, ndim=1)
        if len(images) != len(labels):
            raise DataError(
                f"{kind}: {images_path.name} has {len(images)} images but {labels_path.name} has "
                f"{len(labels)} labels; pass matching files"
            )
        y = torch.from_numpy(labels.astype(np.int64))
        _check_labels(y, 10, labels_path)
        return torch.from_numpy(images).unsqueeze(1), y

    train_x, train_y = pair("train")
    test_x, test_y = pair("t10k")
    names = _FASHION_NAMES if kind == "fashion-mnist" else tuple(str(i) for i in range(10))
    return _Raw(train_x, train_y, test_x, test_y, names, "crop", str(root))


# ----------------------------------------------------------------------------------------------- folder


def _parse_size(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) <= 0:
        raise DataError(f"folder: size={value!r} is not a positive integer; use e.g. ?size=32")
    return int(value)


def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(f"folder: no class sub-folders in {root}; put each class's images in its own sub-folder")
    return dirs


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(
        p
        for p in class_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _IMAGE_SUFFIXES
    )
    if not files:
        raise DataError(f"folder: class folder {class_dir} holds no images; add images or remove the folder")
    return files


def _read_image(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            if size is not None and rgb.size != size:
                rgb = rgb.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"folder: cannot read image {path} ({exc}); fix or remove the file") from exc


def _read_images(
    root: Path, names: Sequence[str], size: tuple[int, int] | None
) -> tuple[list[np.ndarray], list[int], tuple[int, int] | None]:
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        if not (root / name).is_dir():
            continue
        for path in _image_files(root / name):
            img = _read_image(path, size)
            if size is None:
                size = (img.shape[2], img.shape[1])  # PIL sizes are (width, height)
            images.append(img)
            labels.append(label)
    return images, labels, size


def _load_folder(root: Path, *, size: int | None) -> _Raw:
    train_root = root / "train"
    test_root = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    target = (size, size) if size is not None else None
    if train_root.is_dir() and test_root is not None:
        names = tuple(p.name for p in _class_dirs(train_root))
        extra = sorted({p.name for p in _class_dirs(test_root)} - set(names))
        if extra:
            raise DataError(f"folder: {test_root} has classes {extra} that {train_root} lacks; use the same classes")
        images, labels, target = _read_images(train_root, names, target)
        test_images, test_labels, _ = _read_images(test_root, names, target)
        train_x, train_y = torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)
        test_x, test_y = torch.from_numpy(np.stack(test_images)), torch.tensor(test_labels, dtype=torch.int64)
    else:
        names = tuple(p.name for p in _class_dirs(root))
        images, labels, _ = _read_images(root, names, target)
        x, y = np.stack(images), np.asarray(labels, dtype=np.int64)
        keep, take = _carve(y, fraction=_TEST_FRACTION, seed=_TEST_SEED)
        train_x, train_y = torch.from_numpy(x[keep]), torch.from_numpy(y[keep])
        test_x, test_y = torch.from_numpy(x[take]), torch.from_numpy(y[take])
    return _Raw(train_x, train_y, test_x, test_y, names, "crop+flip", str(root))


# ----------------------------------------------------------------------------------------------- digits


def _load_digits() -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.clip(bunch.images * 16, 0, 255).astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    keep, take = _carve(y, fraction=_TEST_FRACTION, seed=_TEST_SEED)
    names = tuple(str(n) for n in bunch.target_names)
    return _Raw(
        torch.from_numpy(x[keep]),
        torch.from_numpy(y[keep]),
        torch.from_numpy(x[take]),
        torch.from_numpy(y[take]),
        names,
        "crop",
        "sklearn.datasets.load_digits",
    )


# ----------------------------------------------------------------------------------------------- batches


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches :func:`iterate_batches` yields for ``n`` images."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def _augment(xb: torch.Tensor, augment: str, generator: torch.Generator | None) -> torch.Tensor:
    """Random crop after zero padding (and a random horizontal flip for "crop+flip") of a uint8 batch."""
    b, c, h, w = xb.shape
    pad = max(1, min(h, w) // 8)
    padded = F.pad(xb, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(xb.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(xb.device)
    rows = (dy[:, None] + torch.arange(h, device=xb.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=xb.device))[:, None, None, :]
    batch = torch.arange(b, device=xb.device)[:, None, None, None]
    chan = torch.arange(c, device=xb.device)[None, :, None, None]
    out = padded[batch, chan, rows, cols]
    if augment == "crop+flip":
        flip = (torch.rand(b, generator=generator) < 0.5).to(xb.device)[:, None, None, None]
        out = torch.where(flip, out.flip(3), out)
    return out


def normalize(x01: torch.Tensor, *, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x01 − mean) / std`` per channel for float images in [0, 1] (N×C×H×W)."""
    m = torch.tensor(mean, dtype=x01.dtype, device=x01.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x01.dtype, device=x01.device).view(1, -1, 1, 1)
    return (x01 - m) / s


def iterate_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    shuffle: bool = False,
    augment: str = "none",
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    limit: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (float32 ``(x/255 - mean)/std`` images, int64 labels) batches of uint8 N×C×H×W images.

    ``augment`` is "none", "crop" or "crop+flip"; all randomness (order, crops, flips) comes from
    ``generator``. ``limit`` caps the number of images, taken after shuffling (so a random subset).
    """
    if augment not in AUGMENTS:
        raise DataError(f"unknown augment {augment!r}; use one of {', '.join(AUGMENTS)}")
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"need N×C×H×W images and N labels, got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} values for {x.shape[1]} channels")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    n = len(x) if limit is None else min(len(x), limit)
    count = num_batches(n, batch_size, drop_last)
    order = torch.randperm(len(x), generator=generator)[:n] if shuffle else torch.arange(n)
    order = order.to(x.device)
    for i in range(count):
        idx = order[i * batch_size : (i + 1) * batch_size]
        xb = x[idx]
        if augment != "none":
            xb = _augment(xb, augment, generator)
        yield normalize(xb.float() / 255.0, mean=mean, std=std), y[idx].long()
