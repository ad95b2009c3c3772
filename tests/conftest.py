"""Shared fixtures: paths to ../shared/data (tests needing it skip cleanly when it is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CIFAR10 = SHARED / "cifar-10-batches-py"
RESNET20 = SHARED / "pretrained" / "resnet20-12fca82f.th"
RESNET56 = SHARED / "pretrained" / "resnet56-4bfd9763.th"


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    if not (CIFAR10 / "data_batch_1").exists():
        pytest.skip("../shared/data/cifar-10-batches-py is absent")
    return CIFAR10


@pytest.fixture(scope="session")
def resnet20_weights() -> Path:
    if not RESNET20.exists():
        pytest.skip("../shared/data/pretrained is absent")
    return RESNET20


@pytest.fixture(scope="session")
def resnet56_weights() -> Path:
    if not RESNET56.exists():
        pytest.skip("../shared/data/pretrained is absent")
    return RESNET56
