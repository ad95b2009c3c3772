"""The repository stays small enough to submit: no large files, no resume state, no unreviewed binaries.

A session's submission is refused whole when its commits pack to more than 512 MiB or their diffs add up to
more than 256 MiB; one earlier session lost everything it had built that way, by committing checkpoints and
optimizer state every few epochs. Resume state lives in git-ignored folders; what is committed is results.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 2 * 1024 * 1024  # a pruned ResNet-56 FP32 ONNX model is ~1 MB
RESUME_STATE = (".pt", ".pth", ".th", ".db", ".npz", ".ckpt", ".dc")


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_is_larger_than_two_mib() -> None:
    large = [
        f"{p.relative_to(ROOT)} ({p.stat().st_size:,} bytes)"
        for p in tracked_files()
        if p.is_file() and p.stat().st_size > MAX_BYTES
    ]
    assert not large, f"files over {MAX_BYTES:,} bytes are tracked: {large}"


def test_no_resume_state_or_stray_onnx_is_tracked() -> None:
    names = [p.relative_to(ROOT).as_posix() for p in tracked_files()]
    state = [n for n in names if n.endswith(RESUME_STATE)]
    assert not state, f"checkpoints or databases are tracked (keep them in git-ignored run folders): {state}"
    onnx = [n for n in names if n.endswith(".onnx") and "/bundle/" not in n]
    assert not onnx, f"ONNX models are tracked outside a published bundle: {onnx}"
