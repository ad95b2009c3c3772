"""Tests for prunegym.core.data: spec parsing, every loader, the restricted unpickler, splits and batches."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from prunegym.core.data import (
    DataSplits,
    default_val_size,
    iterate_batches,
    load_data,
    num_batches,
    parse_data_spec,
)
from prunegym.core.errors import DataError, UserError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR10_DIR = SHARED_DATA / "cifar-10-batches-py"


def _row_hashes(x: torch.Tensor) -> Counter[str]:
    return Counter(hashlib.sha1(row.tobytes()).hexdigest() for row in x.reshape(len(x), -1).numpy())


def _one_line_error(excinfo: pytest.ExceptionInfo[DataError]) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    assert isinstance(excinfo.value, UserError) and isinstance(excinfo.value, ValueError)
    return message


# ----------------------------------------------------------------------------------------------- specs


def test_parse_data_spec() -> None:
    assert parse_data_spec("digits") == ("digits", None, {})
    assert parse_data_spec("CIFAR10:/a/b") == ("cifar10", "/a/b", {})
    assert parse_data_spec("folder:imgs?size=32") == ("folder", "imgs", {"size": "32"})
    assert parse_data_spec("cifar100:d?labels=coarse&x=1") == (
        "cifar100",
        "d",
        {"labels": "coarse", "x": "1"},
    )
    assert parse_data_spec("fashion_mnist:d") == ("fashion-mnist", "d", {})
    assert parse_data_spec("mnist:") == ("mnist", None, {})


def test_default_val_size() -> None:
    assert default_val_size(50_000) == 5000
    assert default_val_size(1437) == 287
    assert default_val_size(3) == 0


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("imagenet:/x", "known kinds: cifar10, cifar100, mnist, fashion-mnist, folder, digits"),
        ("cifar10:/definitely/not/here", "no such folder /definitely/not/here"),
        ("cifar10", "no path"),
        ("digits:/x", "digits takes no path"),
        ("digits?labels=3", "unknown option(s) labels"),
        ("folder:.?bad", "bad option 'bad'"),
        ("", "empty data spec"),
    ],
)
def test_bad_specs_raise_one_line_data_error(spec: str, needle: str) -> None:
    with pytest.raises(DataError) as excinfo:
        load_data(spec)
    assert needle in _one_line_error(excinfo)


def test_cifar10_dir_without_batches(tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        load_data(f"cifar10:{tmp_path}")
    message = _one_line_error(excinfo)
    assert f"no 'data_batch_1' in {tmp_path}" in message and "cifar10:" in message


# ----------------------------------------------------------------------------------------------- digits


def test_digits_shapes_sizes_and_partition() -> None:
    d = load_data("digits")
    assert isinstance(d, DataSplits)
    assert d.input_shape == (1, 8, 8) and d.in_channels == 1
    assert d.num_classes == 10 and d.class_names == tuple(str(i) for i in range(10))
    assert d.augment == "crop"
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)):
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 8, 8) and len(x) == len(y)
        assert int(y.min()) >= 0 and int(y.max()) <= 9
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (1151, 287, 359)
    assert len(d.train_y) + len(d.val_y) + len(d.test_y) == 1797
    assert int(d.train_x.max()) == 255  # 16 * 16 = 256 clipped
    # The three splits are a partition of the 1797 images (as a multiset of image+label rows).
    bunch = load_digits()
    full = torch.from_numpy(np.clip(bunch.images * 16, 0, 255).astype(np.uint8))
    full_rows = torch.cat([full.reshape(1797, -1), torch.from_numpy(bunch.target).to(torch.uint8)[:, None]], 1)

    def rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.reshape(len(x), -1), y.to(torch.uint8)[:, None]], 1)

    parts = [rows(d.train_x, d.train_y), rows(d.val_x, d.val_y), rows(d.test_x, d.test_y)]
    assert _row_hashes(torch.cat(parts)) == _row_hashes(full_rows)
    # Stratified test split: every digit has 35-37 test images.
    assert set(torch.bincount(d.test_y).tolist()) <= {35, 36, 37}
    # mean/std are those of train_x in [0,1] units.
    pixels = d.train_x.double() / 255
    assert d.mean[0] == pytest.approx(float(pixels.mean()), abs=1e-12)
    assert d.std[0] == pytest.approx(float(pixels.std(unbiased=False)), abs=1e-12)


def test_digits_split_determinism() -> None:
    a, b, c = load_data("digits", seed=0), load_data("digits", seed=0), load_data("digits", seed=1)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.val_x, c.val_x)
    assert torch.equal(a.test_x, c.test_x) and torch.equal(a.test_y, c.test_y)  # test never depends on seed
    assert _row_hashes(torch.cat([a.train_x, a.val_x])) == _row_hashes(torch.cat([c.train_x, c.val_x]))


def test_val_size_bounds() -> None:
    d = load_data("digits", val_size=100)
    assert (len(d.train_y), len(d.val_y)) == (1338, 100)
    assert len(load_data("digits", val_size=0).val_y) == 0
    with pytest.raises(DataError) as excinfo:
        load_data("digits", val_size=1438)
    assert "use 0 to 1437" in _one_line_error(excinfo)


# ----------------------------------------------------------------------------------------------- CIFAR


@pytest.fixture(scope="module")
def cifar10() -> DataSplits:
    if not (CIFAR10_DIR / "data_batch_1").is_file():
        pytest.skip(f"CIFAR-10 not found at {CIFAR10_DIR}")
    return load_data(f"cifar10:{CIFAR10_DIR}")


def test_cifar10_real(cifar10: DataSplits) -> None:
    d = cifar10
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (45_000, 5_000, 10_000)
    assert d.input_shape == (3, 32, 32) and d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert d.num_classes == 10 and d.class_names[0] == "airplane" and d.class_names[9] == "truck"
    assert d.augment == "crop+flip"
    assert torch.bincount(torch.cat([d.train_y, d.val_y])).tolist() == [5000] * 10
    assert torch.bincount(d.test_y).tolist() == [1000] * 10
    assert d.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=1e-3)
    assert d.std == pytest.approx((0.2470, 0.2435, 0.2616), abs=1e-3)
    assert not set(_row_hashes(d.val_x[:500])) & set(_row_hashes(d.train_x[:5000]))


def test_cifar10_parent_dir_finds_batches(cifar10: DataSplits) -> None:
    parent = load_data(f"cifar10:{CIFAR10_DIR.parent}", val_size=10)
    assert len(parent.train_y) == 49_990
    assert torch.equal(parent.test_x[:5], cifar10.test_x[:5])


def _write_cifar10(root: Path, *, per_batch: int = 4, protocol: int = 4, legacy: bool = False) -> np.ndarray:
    """A tiny CIFAR-10 folder; returns the train data (N×3072) in file order.

    ``legacy`` spells the array constructor ``numpy.core.multiarray`` (as in the official files, written with
    numpy 1.x); that text rewrite is only valid for protocol 2, whose GLOBAL opcode is newline-terminated.
    """
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dumps(obj: object) -> bytes:
        blob = pickle.dumps(obj, protocol=protocol)
        return blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n") if legacy else blob

    all_data = []
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(per_batch)]
        all_data.append(data)
        batch = {b"data": data, b"labels": labels, b"filenames": [b"f.png"] * per_batch, b"batch_label": b"b"}
        (root / f"data_batch_{i}").write_bytes(dumps(batch))
    test = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [0, 1, 2]}
    (root / "test_batch").write_bytes(dumps(test))
    meta = {b"label_names": [f"class{k}".encode() for k in range(10)], b"num_cases_per_batch": per_batch}
    (root / "batches.meta").write_bytes(dumps(meta))
    return np.concatenate(all_data)


@pytest.mark.parametrize(("protocol", "legacy"), [(2, False), (2, True), (4, False)])
def test_cifar10_synthetic_round_trip(tmp_path: Path, protocol: int, legacy: bool) -> None:
    data = _write_cifar10(tmp_path / "cifar-10-batches-py", protocol=protocol, legacy=legacy)
    if legacy:
        assert b"numpy.core.multiarray\n" in (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()
    d = load_data(f"cifar10:{tmp_path}", val_size=0)
    assert len(d.train_y) == 20 and len(d.test_y) == 3 and d.class_names[3] == "class3"
    # Row layout: 1024 red, 1024 green, 1024 blue values, each plane row-major 32×32.
    assert torch.equal(d.train_x[0, 0, 0], torch.from_numpy(data[0, :32]))
    assert torch.equal(d.train_x[7, 2, 31], torch.from_numpy(data[7, 3072 - 32 :]))
    assert d.train_y[:4].tolist() == [1, 2, 3, 4]
    assert d.mean[1] == pytest.approx(data[:, 1024:2048].mean() / 255, abs=1e-12)


def test_cifar100_synthetic_fine_and_coarse(tmp_path: Path) -> None:
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 10), ("test", 4)):
        split = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"fine_labels": [k * 9 for k in range(n)],
            b"coarse_labels": [k % 20 for k in range(n)],
        }
        (root / name).write_bytes(pickle.dumps(split, protocol=2))
    meta = {
        b"fine_label_names": [f"fine{k}".encode() for k in range(100)],
        b"coarse_label_names": [f"coarse{k}".encode() for k in range(20)],
    }
    (root / "meta").write_bytes(pickle.dumps(meta))
    fine = load_data(f"cifar100:{tmp_path}", val_size=2)
    assert fine.num_classes == 100 and fine.class_names[99] == "fine99"
    assert sorted(torch.cat([fine.train_y, fine.val_y]).tolist()) == [k * 9 for k in range(10)]
    coarse = load_data(f"cifar100:{root}?labels=coarse", val_size=2)
    assert coarse.num_classes == 20 and coarse.test_y.tolist() == [0, 1, 2, 3]
    with pytest.raises(DataError) as excinfo:
        load_data(f"cifar100:{root}?labels=medium")
    assert "?labels=fine or ?labels=coarse" in _one_line_error(excinfo)


class _SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize(("payload_cls", "global_name"), [(_SystemPayload, "system"), (_EvalPayload, "builtins.eval")])
def test_restricted_unpickler_refuses_code(tmp_path: Path, payload_cls: type, global_name: str) -> None:
    root = tmp_path / "cifar"
    _write_cifar10(root)
    marker = tmp_path / "pwned"
    batch = {b"data": payload_cls(marker), b"labels": [0]}
    (root / "data_batch_1").write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError) as excinfo:
        load_data(f"cifar10:{root}")
    message = _one_line_error(excinfo)
    assert message.startswith("refusing to unpickle ") and global_name in message
    assert f"from {root / 'data_batch_1'}: not a CIFAR file" in message
    assert not marker.exists()


def test_eval_payload_is_live_without_the_restriction(tmp_path: Path) -> None:
    """Guards the test above: the same pickle does run its payload under a plain pickle.loads."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_EvalPayload(marker)))
    assert marker.exists()


def test_truncated_cifar_pickle(tmp_path: Path) -> None:
    root = tmp_path / "cifar"
    _write_cifar10(root)
    blob = (root / "test_batch").read_bytes()
    (root / "test_batch").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as excinfo:
        load_data(f"cifar10:{root}")
    assert f"cannot read {root / 'test_batch'} as a CIFAR pickle" in _one_line_error(excinfo)


# ----------------------------------------------------------------------------------------------- MNIST


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(root: Path, *, gz: bool, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        if gz:
            with gzip.open(root / f"{name}.gz", "wb") as f:
                f.write(_idx_bytes(array))
        else:
            (root / name).write_bytes(_idx_bytes(array))
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = _write_mnist(tmp_path, gz=gz)
    d = load_data(f"mnist:{tmp_path}", val_size=0)
    assert d.input_shape == (1, 28, 28) and d.augment == "crop" and d.num_classes == 10
    assert torch.equal(d.train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert d.train_y.tolist() == [i % 10 for i in range(12)]
    assert torch.equal(d.test_x[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert d.test_y.tolist() == [0, 3, 6, 9, 2]


def test_fashion_mnist_names(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=True)
    d = load_data(f"fashion-mnist:{tmp_path}", val_size=2)
    assert d.class_names[0] == "T-shirt/top" and d.class_names[9] == "Ankle boot"
    assert (len(d.train_y), len(d.val_y)) == (10, 2)


def test_mnist_truncated_and_missing(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(DataError) as excinfo:
        load_data(f"mnist:{tmp_path}")
    message = _one_line_error(excinfo)
    assert str(images) in message and "truncated" in message
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    images.unlink()
    with pytest.raises(DataError) as excinfo:
        load_data(f"mnist:{tmp_path}")
    assert "no train-images-idx3-ubyte[.gz]" in _one_line_error(excinfo)


def test_mnist_truncated_gzip(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=True)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-12])
    with pytest.raises(DataError) as excinfo:
        load_data(f"mnist:{tmp_path}")
    assert f"cannot read {labels}" in _one_line_error(excinfo)


# ----------------------------------------------------------------------------------------------- folder


def _write_images(root: Path, classes: dict[str, int], size: tuple[int, int] = (12, 10)) -> None:
    for k, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", size, (40 * k, 10 * i, 200)).save(root / name / f"{i}.png")


def test_folder_flat_layout_carves_test(tmp_path: Path) -> None:
    _write_images(tmp_path, {"cat": 5, "dog": 5})
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    d = load_data(f"folder:{tmp_path}", val_size=1)
    assert d.num_classes == 2 and d.class_names == ("cat", "dog")
    assert d.input_shape == (3, 10, 12) and d.augment == "crop+flip"
    assert torch.bincount(d.test_y).tolist() == [1, 1]
    assert len(d.train_y) + len(d.val_y) == 8
    # Pixel values survive: the blue channel is 200 everywhere, red encodes the class.
    assert int(d.train_x[:, 2].min()) == int(d.train_x[:, 2].max()) == 200
    assert d.test_x[d.test_y == 1][:, 0].unique().tolist() == [40]


def test_folder_train_test_layout_and_size(tmp_path: Path) -> None:
    _write_images(tmp_path / "train", {"a": 3, "b": 2, "c": 2})
    _write_images(tmp_path / "val", {"a": 1, "b": 1}, size=(20, 20))
    d = load_data(f"folder:{tmp_path}?size=16", val_size=0)
    assert d.class_names == ("a", "b", "c") and d.input_shape == (3, 16, 16)
    assert (len(d.train_y), len(d.test_y)) == (7, 2) and d.test_y.tolist() == [0, 1]
    default_size = load_data(f"folder:{tmp_path}", val_size=0)
    assert default_size.input_shape == (3, 10, 12) and default_size.test_x.shape[2:] == (10, 12)


def test_folder_errors(tmp_path: Path) -> None:
    _write_images(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as excinfo:
        load_data(f"folder:{tmp_path}")
    assert f"class folder {tmp_path / 'empty'} holds no images" in _one_line_error(excinfo)
    (tmp_path / "empty").rmdir()
    bad = tmp_path / "b" / "broken.png"
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(DataError) as excinfo:
        load_data(f"folder:{tmp_path}")
    assert f"cannot read image {bad}" in _one_line_error(excinfo)
    with pytest.raises(DataError) as excinfo:
        load_data(f"folder:{tmp_path}?size=big")
    assert "size='big' is not a positive integer" in _one_line_error(excinfo)


# ----------------------------------------------------------------------------------------------- batches


def test_num_batches() -> None:
    assert num_batches(10, 4) == 3
    assert num_batches(10, 4, drop_last=True) == 2
    assert num_batches(8, 4) == 2 and num_batches(0, 4) == 0


def test_iterate_batches_normalization_exact() -> None:
    x = torch.tensor([0, 51, 102, 255], dtype=torch.uint8).view(1, 1, 2, 2).repeat(3, 1, 1, 1)
    y = torch.tensor([7, 8, 9])
    batches = list(iterate_batches(x, y, batch_size=2, mean=(0.2,), std=(0.5,)))
    assert [len(b[1]) for b in batches] == [2, 1]
    xb, yb = batches[0]
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64 and yb.tolist() == [7, 8]
    expected = torch.tensor([[-0.4, 0.0], [0.4, 1.6]])
    assert torch.allclose(xb[0, 0], expected, atol=1e-6)
    assert torch.equal(batches[1][0], xb[:1])


def _shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The crop at offset (dy, dx) in [-pad, pad] of the zero-padded image."""
    out = torch.zeros_like(img)
    h, w = img.shape[1:]
    src = img[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
    out[:, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)] = src
    return out


def _matches(out: torch.Tensor, img: torch.Tensor, pad: int) -> bool:
    return any(torch.equal(out, _shifted(img, dy, dx)) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1))


def test_iterate_batches_augmentation() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=gen)
    y = torch.arange(64)
    stats = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}

    def run(augment: str, seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [b for b, _ in iterate_batches(x, y, batch_size=16, augment=augment, generator=g, **stats)]

    plain = torch.cat(run("none", 0))
    assert torch.allclose(plain * 255, x.float())
    for augment in ("crop", "crop+flip"):
        a, b, c = torch.cat(run(augment, 1)), torch.cat(run(augment, 1)), torch.cat(run(augment, 2))
        assert a.shape == plain.shape and torch.equal(a, b)
        assert not torch.equal(a, plain) and not torch.equal(a, c)
    # Each crop is the image shifted by <= pad = 16 // 8 = 2 px with zero fill; flips only with crop+flip.
    crops = (torch.cat(run("crop", 3)) * 255).round().to(torch.uint8)
    assert all(_matches(crops[i], x[i], 2) for i in range(64))
    flips = (torch.cat(run("crop+flip", 3)) * 255).round().to(torch.uint8)
    flipped = [not _matches(flips[i], x[i], 2) for i in range(64)]
    assert all(_matches(flips[i], x[i].flip(2), 2) for i in range(64) if flipped[i])
    assert 16 < sum(flipped) < 48


def test_iterate_batches_shuffle_limit_drop_last() -> None:
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    y = torch.arange(10)
    stats = {"mean": (0.0,), "std": (1.0 / 255,)}  # so the float batch equals the raw value
    g = torch.Generator().manual_seed(0)
    shuffled = [yb for _, yb in iterate_batches(x, y, batch_size=3, shuffle=True, generator=g, **stats)]
    assert sorted(torch.cat(shuffled).tolist()) == list(range(10))
    assert torch.cat(shuffled).tolist() != list(range(10))
    limited = list(iterate_batches(x, y, batch_size=3, limit=7, **stats))
    assert [b[1].tolist() for b in limited] == [[0, 1, 2], [3, 4, 5], [6]]
    assert torch.equal(limited[2][0].view(-1), torch.tensor([6.0]))
    dropped = list(iterate_batches(x, y, batch_size=3, limit=7, drop_last=True, **stats))
    assert len(dropped) == num_batches(7, 3, drop_last=True) == 2
    g = torch.Generator().manual_seed(0)
    subset = [yb for _, yb in iterate_batches(x, y, batch_size=4, shuffle=True, limit=5, generator=g, **stats)]
    assert len(set(torch.cat(subset).tolist())) == 5
    with pytest.raises(DataError) as excinfo:
        next(iterate_batches(x, y, batch_size=3, augment="rotate", **stats))
    assert "use one of none, crop, crop+flip" in _one_line_error(excinfo)


def test_digits_upscale_to_the_demo_size_and_keep_their_splits() -> None:
    small, big = load_data("digits"), load_data("digits?size=32")
    assert big.input_shape == (1, 32, 32) and big.train_x.dtype == torch.uint8
    assert torch.equal(small.train_y, big.train_y) and len(big.test_y) == len(small.test_y) == 359
    assert abs(big.train_x.float().mean() / small.train_x.float().mean() - 1.0) < 0.05  # same images, finer grid
    with pytest.raises(DataError, match="size='0' is not a positive integer"):
        load_data("digits?size=0")


def test_val_test_half_splits_the_test_set_into_the_same_two_halves_for_every_seed() -> None:
    a = load_data("digits?val=test-half", seed=0)
    b = load_data("digits?val=test-half", val_size=10, seed=7)
    full = load_data("digits")
    assert len(a.val_y) + len(a.test_y) == len(full.test_y) and len(a.train_y) == len(full.train_y) + len(full.val_y)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.test_x, b.test_x)  # never depends on --seed
    assert abs(len(a.val_y) - len(a.test_y)) <= 1
    with pytest.raises(DataError, match="val=nope is not one of train, test-half"):
        load_data("digits?val=nope")
