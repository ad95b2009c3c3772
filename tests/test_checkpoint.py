from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunegym.core.checkpoint import load_model, save_model
from prunegym.core.errors import CheckpointError
from prunegym.core.models import build_model


def test_loads_published_akamaster_checkpoint(resnet20_weights: Path) -> None:
    raw = torch.load(resnet20_weights, map_location="cpu", weights_only=True)
    assert next(iter(raw["state_dict"])).startswith("module.")
    model = load_model("resnet20", weights=resnet20_weights)
    own = model.state_dict()
    assert torch.equal(own["conv1.weight"], raw["state_dict"]["module.conv1.weight"].cpu())


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model("resnet20", weights=tmp_path / "nope.th")


def test_corrupt_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.th"
    bad.write_bytes(b"\x80\x02not a zip or pickle at all")
    with pytest.raises(CheckpointError, match="corrupt or not a PyTorch weights file"):
        load_model("resnet20", weights=bad)


class Evil:
    def __reduce__(self):  # pragma: no cover - must never run
        return (Path.touch, (Path("/tmp/prunegym-evil-marker"),))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    marker = Path("/tmp/prunegym-evil-marker")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="only weights-only checkpoints"):
        load_model("resnet20", weights=path)
    assert not marker.exists()


def test_wrong_model_reports_keys_and_first_shape_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "r20.pt"
    torch.save({"state_dict": build_model("resnet20", num_classes=100).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"first shape mismatch linear\.weight: checkpoint \(100, 64\)"):
        load_model("resnet20", weights=path)
    with pytest.raises(CheckpointError, match=r"missing keys .*unexpected keys"):
        load_model("smallcnn", weights=path)


def test_plain_state_dict_missing_num_batches_tracked_is_tolerated(tmp_path: Path) -> None:
    sd = {k: v for k, v in build_model("resnet20").state_dict().items() if "num_batches_tracked" not in k}
    path = tmp_path / "plain.pt"
    torch.save(sd, path)
    model = load_model("resnet20", weights=path)
    assert torch.equal(model.state_dict()["linear.weight"], sd["linear.weight"])


def test_save_model_round_trip(tmp_path: Path) -> None:
    model = build_model("smallcnn", in_channels=1).eval()
    save_model(tmp_path / "run", model=model)
    loaded = load_model(str(tmp_path / "run")).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
