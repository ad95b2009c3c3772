"""Datasets as uint8 tensors: parse a data spec, load train/val/test splits, iterate normalized batches.

A data spec is ``kind[:path][?k=v&k2=v2]``:

- ``cifar10:DIR`` / ``cifar100:DIR[?labels=coarse]`` — the "python version" pickles (read with a restricted
  unpickler that builds nothing but dicts, lists, bytes, str, int and numpy uint8 arrays);
- ``mnist:DIR`` / ``fashion-mnist:DIR`` — idx files, raw or ``.gz``;
- ``folder:DIR[?size=32]`` — one sub-folder of images per class (optionally under ``train/`` and ``test/``);
- ``digits[?size=32]`` — scikit-learn's bundled 8×8 digits (optionally upscaled: the demo's 32×32 digits).

The validation split is always carved from the training set with a seeded permutation, so search rewards never
see the official test split; ``test_x``/``test_y`` are for final reports only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from prunegym.core.datasets import (
    EXAMPLES,
    RawData,
    load_cifar10,
    load_cifar100,
    load_digits,
    load_folder,
    load_mnist,
    parse_size,
)
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

_OPTIONS = {"cifar100": {"labels"}, "folder": {"size"}, "digits": {"size"}}
VAL_SOURCES = ("train", "test-half")
TEST_HALF_SEED = 20_000  # fixed: every run, whatever its --seed, splits the test set into the same two halves


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


# ----------------------------------------------------------------------------------------------- specs


def parse_data_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """Split ``kind[:path][?k=v&k2=v2]`` into (kind, path or None, options). The kind is lower-cased."""
    head, _, query = spec.strip().partition("?")
    kind, sep, path = head.partition(":")
    kind = kind.strip().lower().replace("_", "-")
    if not kind:
        raise DataError(f"empty data spec {spec!r}; use kind[:path][?k=v], e.g. {EXAMPLES['cifar10']}")
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
    unknown = set(options) - _OPTIONS.get(kind, set()) - {"val"}
    if unknown:
        allowed = ", ".join(sorted({*_OPTIONS.get(kind, set()), "val"}))
        raise DataError(f"{kind}: unknown option(s) {', '.join(sorted(unknown))}; allowed options: {allowed}")
    if kind == "digits":
        if path is not None:
            raise DataError(f"digits takes no path (got {path!r}); write just 'digits'")
        raw = load_digits(size=parse_size(options.get("size")))
    else:
        if path is None:
            raise DataError(f"{kind}: no path in {spec!r}; write {kind}:DIR, e.g. {EXAMPLES[kind]}")
        root = Path(path).expanduser()
        if not root.is_dir():
            raise DataError(f"{kind}: no such folder {root}; pass an existing folder, e.g. {EXAMPLES[kind]}")
        if kind == "cifar10":
            raw = load_cifar10(root)
        elif kind == "cifar100":
            raw = load_cifar100(root, labels=options.get("labels", "fine"))
        elif kind in ("mnist", "fashion-mnist"):
            raw = load_mnist(root, kind=kind)
        else:
            raw = load_folder(root, size=parse_size(options.get("size")))
    val_source = options.get("val", "train")
    if val_source not in VAL_SOURCES:
        raise DataError(f"{spec!r}: val={val_source} is not one of {', '.join(VAL_SOURCES)}")
    if val_source == "test-half":
        return _split_test_half(spec, raw)
    return _split(spec, raw, val_size=val_size, seed=seed)


def _take(t: torch.Tensor, idx: np.ndarray | None) -> torch.Tensor:
    """``t[idx]`` (numpy fancy indexing: ~10x torch's on uint8); ``None`` takes all of ``t`` without a copy."""
    return t if idx is None else torch.from_numpy(np.take(t.numpy(), idx, axis=0))


def _splits(
    spec: str, raw: RawData, *, train: np.ndarray | None, val: np.ndarray, test: np.ndarray | None, val_from: str
) -> DataSplits:
    """The splits: ``train`` indexes the training images, ``val`` the ``val_from`` ones ("train" or "test"),
    ``test`` the test images (``None``: all of them, not copied); normalization statistics come from the
    training split."""
    val_pool = (raw.train_x, raw.train_y) if val_from == "train" else (raw.test_x, raw.test_y)
    train_x = _take(raw.train_x, train)
    mean, std = _channel_stats(train_x)
    splits = DataSplits(
        spec=spec,
        train_x=train_x,
        train_y=_take(raw.train_y, train),
        val_x=_take(val_pool[0], val),
        val_y=_take(val_pool[1], val),
        test_x=_take(raw.test_x, test),
        test_y=_take(raw.test_y, test),
        num_classes=len(raw.class_names),
        class_names=raw.class_names,
        mean=mean,
        std=std,
        augment=raw.augment,
    )
    where = "" if val_from == "train" else " (val = one half of the test set, test = the other)"
    log.info("loaded %s from %s: %r%s", spec, raw.source, splits, where)
    return splits


def _split_test_half(spec: str, raw: RawData) -> DataSplits:
    """For a checkpoint trained on the whole training set (its val accuracy would be ~100%): val is one half of
    the test set, test the other half, the same halves for every run; train is every training image."""
    n = len(raw.test_y)
    if n < 2:
        raise DataError(f"{spec!r}: val=test-half needs a test set of at least 2 images, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(TEST_HALF_SEED))
    val_idx, test_idx = perm[: n // 2].sort().values.numpy(), perm[n // 2 :].sort().values.numpy()
    return _splits(spec, raw, train=None, val=val_idx, test=test_idx, val_from="test")


def _split(spec: str, raw: RawData, *, val_size: int | None, seed: int) -> DataSplits:
    n = len(raw.train_y)
    if val_size is None:
        val_size = default_val_size(n)
    if not 0 <= val_size < n:
        raise DataError(f"val_size={val_size} does not fit the {n} training images of {spec!r}; use 0 to {n - 1}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size].sort().values.numpy(), perm[val_size:].sort().values.numpy()
    return _splits(spec, raw, train=train_idx, val=val_idx, test=None, val_from="train")


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
