"""Dataset readers: each turns files on disk (or scikit-learn's bundled digits) into uint8 tensors.

- ``cifar10``/``cifar100``: the "python version" pickles, read with a restricted unpickler that builds nothing but
  dicts, lists, bytes, str, int and numpy uint8 arrays;
- ``mnist``/``fashion-mnist``: idx files, raw or ``.gz``;
- ``folder``: one sub-folder of images per class (optionally under ``train/`` and ``test/``);
- ``digits``: scikit-learn's 8×8 digits, the embedded default.

:func:`prunegym.core.data.load_data` parses the data spec and carves the val split; this module only reads.
"""

from __future__ import annotations

import gzip
import importlib
import logging
import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunegym.core.errors import DataError

__all__ = [
    "EXAMPLES",
    "RawData",
    "load_cifar10",
    "load_cifar100",
    "load_digits",
    "load_folder",
    "load_mnist",
    "parse_size",
]

log = logging.getLogger(__name__)

EXAMPLES = {
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


@dataclass(frozen=True)
class RawData:
    """What a loader returns: the full training set (val not yet carved) and the test set."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: tuple[str, ...]
    augment: str
    source: str


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
        f"{kind}: no {marker!r} in {root}; pass the folder that holds {subdir} files, e.g. {EXAMPLES[kind]}"
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


def load_cifar10(root: Path) -> RawData:
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
    return RawData(train_x, train_y, test_x, test_y, names, "crop+flip", str(base))


def load_cifar100(root: Path, *, labels: str) -> RawData:
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
    return RawData(train_x, train_y, test_x, test_y, names, "crop+flip", str(base))


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
    raise DataError(f"{kind}: no {stem}[.gz] in {root}; pass the folder holding the idx files, e.g. {EXAMPLES[kind]}")


def load_mnist(root: Path, *, kind: str) -> RawData:
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
    return RawData(train_x, train_y, test_x, test_y, names, "crop", str(root))


# ----------------------------------------------------------------------------------------------- folder


def parse_size(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) <= 0:
        raise DataError(f"size={value!r} is not a positive integer; use e.g. ?size=32")
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


def load_folder(root: Path, *, size: int | None) -> RawData:
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
    return RawData(train_x, train_y, test_x, test_y, names, "crop+flip", str(root))


# ----------------------------------------------------------------------------------------------- digits


def load_digits(*, size: int | None = None) -> RawData:
    """scikit-learn's 8×8 digits as uint8 images, upscaled (bilinear) to ``size``×``size`` when given."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.clip(bunch.images * 16, 0, 255).astype(np.uint8)[:, None]
    if size is not None and size != x.shape[-1]:
        up = torch.nn.functional.interpolate(torch.from_numpy(x).float(), size=(size, size), mode="bilinear")
        x = up.round().clamp(0, 255).to(torch.uint8).numpy()
    y = bunch.target.astype(np.int64)
    keep, take = _carve(y, fraction=_TEST_FRACTION, seed=_TEST_SEED)
    names = tuple(str(n) for n in bunch.target_names)
    return RawData(
        torch.from_numpy(x[keep]),
        torch.from_numpy(y[keep]),
        torch.from_numpy(x[take]),
        torch.from_numpy(y[take]),
        names,
        "crop",
        "sklearn.datasets.load_digits",
    )
