"""Shared fixtures: paths to ../shared/data (tests needing it skip cleanly when it is absent)."""

from __future__ import annotations

from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory) -> Path:
    """A small CNN trained for a few epochs on digits (real data, real accuracy), saved as a prunegym model."""
    import torch

    from prunegym.core.checkpoint import save_model
    from prunegym.core.data import load_data
    from prunegym.core.models import build_model
    from prunegym.core.train import TrainConfig, train

    out = tmp_path_factory.mktemp("digits")
    data = load_data("digits")
    torch.manual_seed(0)
    model = build_model("smallcnn", in_channels=1)
    cfg = TrainConfig(model="smallcnn", data="digits", out=str(out), epochs=4, batch_size=64, lr=0.05, eval_test=False)
    train(config=cfg, model=model, data=data, run_dir=out)
    return save_model(out / "model.pt", model=model)


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """Small convs on a shared 2-core machine run far faster single-threaded (another job may hold a core)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis server's URL (``eval "$(bash .ci/redis.sh start)"``); skips without one, fails under CI."""
    from server_helpers import server_url_or_skip

    return server_url_or_skip(
        "PRUNEGYM_TEST_REDIS_URL", start="bash .ci/redis.sh start", what="the device-worker tests"
    )


@pytest.fixture(scope="session")
def digits():
    from prunegym.core.data import load_data

    return load_data("digits")
