"""bench/gpu_data.py: CIFAR batches travel to a lent GPU machine as WebP mosaics and come back byte for byte."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_data.py"
CIFAR = ROOT.parent / "shared" / "data" / "cifar-10-batches-py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_data", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False)


def _batch(path: Path, n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    smooth = np.repeat(rng.integers(0, 256, (n, 3, 32, 4), dtype=np.uint8), 8, axis=3)  # compressible, not constant
    obj = {b"batch_label": b"test", b"labels": rng.integers(0, 10, n).tolist(), b"data": smooth.reshape(n, 3072)}
    raw = pickle.dumps(obj, protocol=4)
    path.write_bytes(raw)
    return raw


def test_pack_unpack_is_byte_exact_and_the_pixels_leave_the_rest(tmp_path: Path) -> None:
    src, part, dest = tmp_path / "src", tmp_path / "part", tmp_path / "dest"
    src.mkdir()
    raws = {"data_batch_1": _batch(src / "data_batch_1", 250, 0), "odd": _batch(src / "odd", 130, 1)}
    (src / "weights.th").write_bytes(b"PK\x03\x04 not a pickle")
    assert _cli("pack", str(src), str(part), "data_batch_1", "odd", "weights.th").returncode == 0
    assert (part / "data_batch_1.webp").exists() and (part / "weights.th.raw").exists()
    assert (part / "data_batch_1.rest").stat().st_size < 10_000  # the 768,000 pixel bytes are in the WebP
    done = _cli("unpack", str(dest), str(part))
    assert done.returncode == 0, done.stderr
    for name, raw in raws.items():
        assert (dest / name).read_bytes() == raw
    assert (dest / "weights.th").read_bytes() == b"PK\x03\x04 not a pickle"


def test_a_part_that_does_not_rebuild_is_refused(tmp_path: Path) -> None:
    src, part, dest = tmp_path / "src", tmp_path / "part", tmp_path / "dest"
    src.mkdir()
    _batch(src / "data_batch_1", 200, 2)
    assert _cli("pack", str(src), str(part), "data_batch_1").returncode == 0
    rest = part / "data_batch_1.rest"
    body = bytearray(zlib.decompress(rest.read_bytes()))
    body[-3] ^= 0xFF  # one label flipped
    rest.write_bytes(zlib.compress(bytes(body)))
    bad = _cli("unpack", str(dest), str(part))
    assert bad.returncode == 2 and "does not rebuild to its SHA-256" in bad.stderr
    assert not (dest / "data_batch_1").exists()


def test_only_a_block_of_whole_images_is_taken_for_pixels() -> None:
    mod = _module()
    assert mod.pixel_block(pickle.dumps({b"labels": list(range(10)), b"data": b"x" * 3072})) is None  # too small
    assert mod.pixel_block(pickle.dumps({b"data": b"x" * (3072 * 100 + 1)})) is None  # not whole images
    raw = pickle.dumps({b"data": b"\x07" * (3072 * 100)}, protocol=3)
    start, length = mod.pixel_block(raw)
    assert length == 307_200 and raw[start : start + length] == b"\x07" * length


def test_missing_source_file_is_one_line(tmp_path: Path) -> None:
    res = _cli("pack", str(tmp_path), str(tmp_path / "out"), "data_batch_9")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "data_batch_9" in res.stderr


@pytest.mark.skipif(not (CIFAR / "test_batch").exists(), reason="../shared/data is absent")
def test_the_real_cifar_test_batch_round_trips(tmp_path: Path) -> None:
    part, dest = tmp_path / "part", tmp_path / "dest"
    assert _cli("pack", str(CIFAR), str(part), "test_batch").returncode == 0
    assert _cli("unpack", str(dest), str(part)).returncode == 0
    digest = hashlib.sha256((dest / "test_batch").read_bytes()).hexdigest()
    assert digest == "dfcaf9cf2d1641b08455fa1d4af54765fedb3e90acad37a687792c9f77544af5"  # shared/data/README.md
    assert (part / "test_batch.webp").stat().st_size < 0.6 * (CIFAR / "test_batch").stat().st_size


def _gpu_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """bench/gpu_run.sh in a bare copy of bench/ (no .gpu/ staged, no .venv); deep_compression.sh names dc's folder."""
    bench = tmp_path / "bench"
    bench.mkdir(exist_ok=True)
    for name in ("gpu_run.sh", "gpu_data.py", "deep_compression.sh"):
        (bench / name).write_bytes((ROOT / "bench" / name).read_bytes())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # its python3
    return subprocess.run(
        ["bash", str(bench / "gpu_run.sh"), *args], capture_output=True, text=True, check=False, env=env
    )


def test_gpu_run_refuses_an_unknown_job_and_a_job_before_its_data(tmp_path: Path) -> None:
    unknown = _gpu_run(tmp_path, "job", "train-everything")
    assert unknown.returncode == 2 and "unknown job 'train-everything'" in unknown.stderr
    early = _gpu_run(tmp_path, "job", "dc")
    assert early.returncode == 2 and "has not arrived; make the recv calls first" in early.stderr
    assert not (tmp_path / "runs").exists()
    usage = _gpu_run(tmp_path, "launch")
    assert usage.returncode == 2 and usage.stderr.startswith("usage:")
